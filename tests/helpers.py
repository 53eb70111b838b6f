"""Importable test doubles (spawned DDP workers import them by name) and checks shared by test files."""

import os

import torch

from lgm_gcp.models.backbones.small_cnn import SmallCNN


class FailsOnRank1(SmallCNN):
    """A backbone whose rank-1 replica raises at its 3rd training forward."""

    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        FailsOnRank1.calls += 1
        if os.environ.get("RANK") == "1" and FailsOnRank1.calls == 3:
            raise RuntimeError("injected failure on rank 1")
        return super().forward(x)


class NanGradient(SmallCNN):
    """Finite outputs and loss, NaN gradients: adds 0 * sqrt(0) to the maps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = super().forward(x)
        return maps + 0.0 * torch.sqrt(maps.sum() * 0.0)


class Rendezvous(SmallCNN):
    """A backbone whose construction waits until every job of a sweep has reached it: a sweep whose
    jobs run one after another cannot get past the first job. ``LGM_GCP_TEST_RENDEZVOUS`` names a
    folder and ``LGM_GCP_TEST_PARTIES`` how many jobs must meet there. The start-up check's build on the
    meta device does not count."""

    def __init__(self, *args, **kwargs):
        import time
        from pathlib import Path

        super().__init__(*args, **kwargs)
        if torch.empty(0).is_meta:  # the start-up check's shape-only build (assemble.check_network): no job yet
            return
        folder = Path(os.environ["LGM_GCP_TEST_RENDEZVOUS"])
        parties = int(os.environ["LGM_GCP_TEST_PARTIES"])
        (folder / f"arrived-{os.getpid()}").touch()
        wait_s = float(os.environ.get("LGM_GCP_TEST_RENDEZVOUS_S", 300))
        deadline = time.time() + wait_s
        while len(list(folder.glob("arrived-*"))) < parties:
            if time.time() > deadline:
                raise RuntimeError(f"rendezvous: only {len(list(folder.glob('arrived-*')))} of {parties} jobs "
                                   f"arrived within {wait_s:g} s: the jobs did not run in parallel")
            time.sleep(0.05)


class BuggyBackbone(SmallCNN):
    """A library bug stand-in: a ValueError from inside the network's forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("injected bug: shapes do not line up")


class StartRecordingTracker:
    """A tracker that leaves ``tracker_started_rank<RANK>`` in the run dir when it starts."""

    name = "recording"

    def start(self, run_dir, config, hparams, run_id):
        (run_dir / f"tracker_started_rank{os.environ.get('RANK', '0')}").touch()

    def scalars(self, values, step):
        pass

    def epoch(self, history):
        pass

    def finish(self, summary, status, checkpoint):
        (checkpoint.parent.parent / "tracker_finished").write_text(status)


class FailingTracker(StartRecordingTracker):
    """A tracker whose scalars raise after it started (a tracking server going away mid-run)."""

    def scalars(self, values, step):
        raise ConnectionError("tracking server went away")


class SlowSmallCNN(SmallCNN):
    """SmallCNN whose every training forward first sleeps ``LGM_GCP_TEST_STEP_S`` seconds: a run that is
    still training when a scheduler's signal arrives, with the same numbers as SmallCNN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            import time

            time.sleep(float(os.environ.get("LGM_GCP_TEST_STEP_S", "0.5")))
        return super().forward(x)


def assert_every_parameter_learns(model):
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters outside the graph: {no_grad[:5]}"
    bad = [n for n, p in model.named_parameters() if p.requires_grad
           and not (torch.isfinite(p.grad).all() and p.grad.abs().max() > 0)]
    assert not bad, f"zero or non-finite gradients: {bad[:5]}"
