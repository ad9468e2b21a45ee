"""Generation backends (HF, vLLM) and the evaluate-a-checkpoint loop; metrics live in rlextra.metrics."""
