"""Other tools' weights in and out: Hugging Face GPT-2 and Llama checkpoints, and their tensor files."""
