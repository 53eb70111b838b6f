"""DDP on CPU with gloo, 2 spawned processes: same result as 1 process, resume, failure propagation."""

import time

import pytest
import torch

from lgm_gcp.engine.launch import launch
from lgm_gcp.engine.signals import PREEMPTED_EXIT

from conftest import resolved, run_command, wait_for

pytestmark = pytest.mark.slow  # every test here starts 2 or more processes

DDP = ["backbone.widths=[8,16]", "backbone.norm=group", "trainer.batch_size=64", "trainer.progress=false",
       "trainer.deterministic=true", "trainer.max_epochs=2"]


def weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    two = launch(resolved(*DDP, "trainer.devices=2", "+logger.recording._target_=helpers.StartRecordingTracker"),
                 tmp_path / "two")
    assert sorted(p.name for p in (tmp_path / "two").glob("tracker_*")) == ["tracker_finished",
                                                                           "tracker_started_rank0"]  # rank 0 only
    one = launch(resolved(*DDP, "trainer.devices=1"), tmp_path / "one")
    a, b = weights(tmp_path / "two"), weights(tmp_path / "one")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)
    checksums = two["replica_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    assert two["world_size"] == 2 and two["final"]["test_images"] == one["final"]["test_images"] == 450
    assert two["final"]["test_top1"] == pytest.approx(one["final"]["test_top1"], abs=0.5)
    assert "global batch 64 = 2 processes x 32 on cpu" in (tmp_path / "two" / "train.log").read_text()


def test_ddp_run_resumes_bitwise(tmp_path):
    launch(resolved(*DDP, "trainer.devices=2"), tmp_path / "straight")
    launch(resolved(*DDP, "trainer.devices=2", "trainer.max_steps=21"), tmp_path / "cut")
    summary = launch(resolved(*DDP, "trainer.devices=2"), tmp_path / "cut")
    assert [r["epoch"] for r in summary["epochs"]] == [0, 1]
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_another_world_size_is_refused(tmp_path):
    from lgm_gcp.engine.checkpoint import CheckpointError

    launch(resolved(*DDP, "trainer.devices=2", "trainer.max_steps=5"), tmp_path)
    with pytest.raises(CheckpointError, match="written by 2 processes, this run has 1"):
        launch(resolved(*DDP, "trainer.devices=1"), tmp_path)


def test_a_failing_rank_ends_the_whole_run(tmp_path):
    start = time.time()
    with pytest.raises(Exception, match="injected failure on rank 1"):
        launch(resolved(*DDP, "trainer.devices=2", "backbone._target_=helpers.FailsOnRank1"), tmp_path)
    assert time.time() - start < 60


def torchrun(tmp_path, *args):
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "lgm_gcp.entrypoint", *args]
    return run_command(cmd, cwd=tmp_path, drop=("RANK", "WORLD_SIZE", "LOCAL_RANK", "HYDRA_FULL_ERROR"))


def test_torchrun_ranks_agree_on_one_run_dir(tmp_path):
    import json

    result = torchrun(tmp_path, *DDP, "trainer.max_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = list((tmp_path / "outputs").rglob("metrics.json"))
    assert len(metrics) == 1  # rank 0 chose the dir and broadcast it
    summary = json.loads(metrics[0].read_text())
    assert summary["world_size"] == 2 and summary["status"] == "finished"
    assert len(set(summary["replica_checksums"])) == 1


def test_torchrun_refuses_multirun(tmp_path):
    result = torchrun(tmp_path, "-m", "seed=0,1")
    assert result.returncode != 0
    assert "-m/--multirun cannot run under torchrun" in result.stderr


def test_sigterm_to_the_launcher_preempts_every_rank_at_the_same_step(tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    cmd = [sys.executable, "-m", "lgm_gcp.entrypoint", *DDP, "trainer.devices=2", "trainer.max_epochs=20",
           "hydra.run.dir=run"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    deadline = time.time() + 600
    while not last.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert wait_for(proc, "the DDP launcher after SIGTERM") == PREEMPTED_EXIT, proc.stderr.read()[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "preempted"
    step = torch.load(last, weights_only=True)["step"]
    assert step < 20 * 21
    assert metrics["rank_steps"] == [step, step]  # both ranks stopped after the same step
    assert len(set(metrics["replica_checksums"])) == 1


def test_a_partial_last_batch_under_ddp_matches_one_process(tmp_path):
    """71 images at a global batch of 24: steps of 24, 24 and 23 (the last split 12/11). With each
    rank's loss scaled by its share, 2 processes train the weights 1 process trains."""
    partial = [*DDP, "dataset=synthetic", "dataset.train_size=71", "dataset.test_size=30", "trainer.batch_size=24",
               "dataset.drop_last=false"]
    two = launch(resolved(*partial, "trainer.devices=2"), tmp_path / "two")
    one = launch(resolved(*partial, "trainer.devices=1"), tmp_path / "one")
    assert two["epochs"][0]["train_images"] == one["epochs"][0]["train_images"] == 71
    assert two["rank_steps"] == [6, 6]  # 3 steps x 2 epochs on both ranks
    a, b = weights(tmp_path / "two"), weights(tmp_path / "one")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)
