"""MLflow (``pip install "lgm-gcp[mlflow]"``): one MLflow run per run folder, continued on resume.

Params: the resolved config, flattened (``trainer.batch_size``); metrics: every scalar at its global
step; tags: the config-group choices, ``lgm_gcp.run_dir``, ``lgm_gcp.status`` and
``lgm_gcp.checkpoint`` (the final ``last.pt``; uploaded as an artifact too with ``log_checkpoint``).
``tracking_uri: null`` takes ``MLFLOW_TRACKING_URI``, else a SQLite store of every run,
``outputs/mlflow.db`` under the working directory, with artifacts in ``outputs/mlartifacts``
(``mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db`` shows them). SQLite is MLflow 3's own default
kind of store; mlflow-skinny opens it with SQLAlchemy and Alembic, which the ``[mlflow]`` extra installs.
(MLflow's default of a bare client, ``sqlite:///mlflow.db`` in the working directory, fails without them,
and MLflow 3 refuses its file store ``file:./mlruns`` unless ``MLFLOW_ALLOW_FILE_STORE=true``.)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping

from lgm_gcp.errors import TrackerError
from lgm_gcp.loggers.base import Tracker, flatten

MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
STATUS = {"finished": "FINISHED", "preempted": "KILLED", "failed": "FAILED"}
STORE = Path("outputs")  # the default store's folder, under the working directory (as the run folders are)


def default_store() -> tuple[str, str]:
    """(tracking URI, artifact location) of the default store: ``outputs/mlflow.db`` and ``outputs/mlartifacts``."""
    root = STORE.resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "mlartifacts").as_uri()


class MLflowTracker(Tracker):
    """``tracking_uri``: None reads MLFLOW_TRACKING_URI, else the SQLite store ``outputs/mlflow.db``;
    ``log_checkpoint`` uploads the final last.pt as an artifact (its path is always a tag)."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = "lgm-gcp", log_checkpoint: bool = False):
        self.tracking_uri, self.experiment, self.log_checkpoint = tracking_uri, experiment, log_checkpoint
        self.client = self.run_id = None

    def start(self, run_dir: Path, config, hparams, run_id):
        try:
            from mlflow.entities import Param, RunTag
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise TrackerError('logger=mlflow needs MLflow: pip install "lgm-gcp[mlflow]"') from None
        uri, artifacts = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"), None
        if not uri:
            uri, artifacts = default_store()
        self.client = MlflowClient(tracking_uri=uri)
        tags = {**{f"choice.{k}": str(v) for k, v in hparams.items()}, "lgm_gcp.run_dir": str(run_dir),
                "lgm_gcp.status": "running"}
        if run_id is not None:  # a resumed run folder: continue its MLflow run
            self.run_id = self.client.get_run(run_id).info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            logged = self.client.get_run(self.run_id).data.params
        else:
            found = self.client.get_experiment_by_name(self.experiment)
            experiment_id = found.experiment_id if found else \
                self.client.create_experiment(self.experiment, artifact_location=artifacts)
            self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name, tags=tags).info.run_id
            logged = {}
        # MLflow params cannot change: a resume with a new max_epochs keeps the first start's value
        params = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in flatten(config).items() if k not in logged]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i: i + 100])
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        return self.run_id

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def finish(self, summary: Mapping[str, Any], status: str, checkpoint: Path | None) -> None:
        self.client.set_tag(self.run_id, "lgm_gcp.status", status)
        if checkpoint is not None:
            self.client.set_tag(self.run_id, "lgm_gcp.checkpoint", str(checkpoint))
            if self.log_checkpoint:
                self.client.log_artifact(self.run_id, str(checkpoint), artifact_path="checkpoints")
        self.client.set_terminated(self.run_id, status=STATUS.get(status, "FAILED"))
