"""Checkpoint series I/O: discovery and validation, lazy chunked reads, atomic sharded writes."""

from rlextra.checkpoints.chunks import DEFAULT_CHUNK_SIZE, chunk_ranges, read_values
from rlextra.checkpoints.reader import TensorRef
from rlextra.checkpoints.series import (Checkpoint, CheckpointSeries, check_loadable, check_model_dir, load_series,
                                       spec_path)
from rlextra.checkpoints.writer import StreamingSafetensorsWriter, parse_size
from rlextra.io import atomic_output_dir

__all__ = ["Checkpoint", "CheckpointSeries", "DEFAULT_CHUNK_SIZE", "StreamingSafetensorsWriter",
           "TensorRef", "atomic_output_dir", "check_loadable", "check_model_dir", "chunk_ranges", "load_series", "parse_size",
           "read_values", "spec_path"]
