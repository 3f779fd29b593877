"""O-LoRA: a new orthogonal LoRA per task (procl.md, LoRA baselines)."""
