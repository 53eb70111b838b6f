"""Entrypoint, launch/distributed, the fit loop, checkpointing, metrics and logging."""
