"""Training: the recipe (setup, train, save), its trainer arguments and trainer, checkpoints and resume,
distributed training, and the dry run.
"""
