"""Data: where text comes from (files, records, named corpora), how it becomes token ids, batches and a
train/val split, prepared corpora on disk, and conversations for chat fine-tuning."""
