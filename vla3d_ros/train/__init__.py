"""Training: stages, schedules, EMA teacher, checkpoints of optimiser state, DDP (METHOD.md §6-7)."""
