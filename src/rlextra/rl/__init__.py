"""The RLVR harness: verifiable tasks, small models, GRPO training through TRL."""
