"""retain's methods inside trainers people already run (Hugging Face `Trainer`, TRL
`SFTTrainer`): `retain.integrations.hf`."""
