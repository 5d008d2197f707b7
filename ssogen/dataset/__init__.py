"""The output folder, a Hugging Face dataset repository: its files, stats, card, scoring and publishing."""
