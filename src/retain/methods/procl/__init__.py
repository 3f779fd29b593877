"""ProCL: continual LoRA with program memory, and the sequential-LoRA baseline (procl.md)."""
