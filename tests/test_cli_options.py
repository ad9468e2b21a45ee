"""The CLI's options come from the config dataclasses and the API's signatures: same defaults, same help."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import pytest

from rlextra import cli
from rlextra.cli_options import Options
from rlextra.decoding import SamplingConfig
from rlextra.extrapolate import EXTRAPOLATE_CHUNK_SIZE
from rlextra.fields import option
from rlextra.rl.config import TrainConfig
from rlextra.tasks import TaskSpec


def _parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(list(argv))


def test_train_defaults_are_the_dataclass_defaults():
    a = _parse("train", "--model", "m", "-o", "o")
    from_cli = TrainConfig(model="m", output_dir="o", task=cli._task(a), **cli.TRAIN.values(a))
    assert dataclasses.asdict(from_cli) == dataclasses.asdict(TrainConfig(model="m", output_dir="o"))


def test_every_train_field_but_the_programmatic_ones_is_an_option():
    exposed = set(cli.TRAIN.specs) | {"model", "output_dir", "task", "progress", "extra"}
    assert exposed == {f.name for f in dataclasses.fields(TrainConfig)}
    a = _parse("train", "--model", "m", "-o", "o", "--lr-warmup-steps", "5", "--rl-extra", "4,8",
               "--rl-extra-include", "mlp", "--rl-extra-exclude", "embed", "--lr", "1e-4", "--steps", "7")
    v = cli.TRAIN.values(a)
    assert (v["warmup_steps"], v["rl_extra"], v["rl_extra_include"], v["rl_extra_exclude"]) == (5, "4,8", "mlp", "embed")
    assert (v["learning_rate"], v["max_steps"]) == (1e-4, 7)


def test_sampling_and_task_defaults_and_per_command_overrides():
    ev = _parse("eval", "model", "-o", "x.json")
    assert SamplingConfig(**cli.SAMPLING.values(ev)) == SamplingConfig(k=4)  # eval's own default k
    assert cli._task(ev) == TaskSpec()
    gen = _parse("generate", "a", "--prompts", "p.jsonl", "-o", "g.jsonl")
    assert SamplingConfig(**cli.SAMPLING.values(gen)) == SamplingConfig()
    bt = _parse("backtest", "run", "-o", "out")
    assert bt.task is None and cli.METHOD.values(bt) == {"rank": 1, "min_r2": None, "device": None, "norms": "copy"}
    ex = _parse("extrapolate", "a", "b", "--to-step", "3", "-o", "out")
    assert cli.EXTRAPOLATE.values(ex)["chunk_size"] == EXTRAPOLATE_CHUNK_SIZE
    assert _parse("analyze", "weights", "run", "-o", "out").chunk_size is None  # sized to the cache when it runs
    assert _parse("analyze", "weights", "run", "--chunk-size", "4096", "-o", "out").chunk_size == 4096


def test_help_names_the_dataclass_default():
    text = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "(default 1e-06)" in text and "samples per prompt (the GRPO group) (default 8)" in text


def test_options_refuse_an_unknown_field_and_map_flags_to_fields():
    @dataclass
    class Cfg:
        lr: float = option(0.1, "rate", flag="--learning-rate")
        tags: list[str] = option(help="tag", default_factory=list)
        on: bool = option(False, "switch")

    with pytest.raises(KeyError, match="nope"):
        Options(Cfg, ["lr", "nope"])
    opts = Options(Cfg, ["lr", "tags", "on"])
    p = argparse.ArgumentParser()
    opts.add(p)
    assert Cfg(**opts.values(p.parse_args(["--learning-rate", "2", "--tags", "a", "--tags", "b", "--on"]))) == \
        Cfg(lr=2.0, tags=["a", "b"], on=True)
    assert Cfg(**opts.values(p.parse_args([]))) == Cfg()


def test_quiet_silences_transformers_bars_for_the_command_only():
    """-q also silences transformers' own bars (loading weights, writing shards), then restores them."""
    from transformers.utils import logging as hf_logging

    from rlextra.hf import hf_progress_bars

    hf_logging.enable_progress_bar()
    with hf_progress_bars(False):
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()
    with hf_progress_bars(True):
        assert hf_logging.is_progress_bar_enabled()
