"""Tasks that make their own examples and score a model on them: the calculator, and chat fine-tuning."""
