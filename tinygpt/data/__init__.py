"""Data: where text comes from (files, records, named corpora), how it becomes token ids, batches and a
train/val split, prepared corpora on disk, conversations for chat fine-tuning, and the one call a training run
reads its data with (training_data.py)."""
