"""LR policies and margin schedules: pure functions of the global step, so resume cannot drift."""
