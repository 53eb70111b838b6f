"""Experiment trackers, one per option of the ``logger`` config group (several at once:
``logger=[tensorboard,csv,mlflow]``). Rank 0 alone builds them, before training starts; each is told
every logged scalar, every finished epoch, and the run's summary with its final checkpoint.

``metrics.json`` is not a tracker: the trainer always writes it (lgm-gcp-table and resumes read it).
"""
