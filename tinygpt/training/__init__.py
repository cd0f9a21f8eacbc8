"""Training: the loop, the run directory, what a run trains on, checkpoints, optimizers, evaluation,
several processes, memory, and signals."""
