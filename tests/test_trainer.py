"""The trainer end to end: run folder contents, metrics.json, exact resume, checkpoints."""

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from lgm_gcp.engine import checkpoint
from lgm_gcp.engine.train import run

from conftest import TINY, run_cli


def test_cli_run_writes_run_folder_with_metrics_and_plain_logs(tmp_path):
    with_bars = [o for o in TINY if not o.startswith("trainer.progress")]  # the default: bars on a terminal
    result = run_cli(*with_bars, "hydra.run.dir=outputs/r", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    # not a terminal (captured): no progress-bar fragments, one log line per epoch
    output = result.stdout + result.stderr
    assert "\r" not in output and "it/s" not in output
    assert "global batch 64 = 1 process x 64 on cpu, 21 steps an epoch" in output  # digits: 1,347 // 64, drop_last
    assert [line.split("epoch ")[1].split()[0] for line in output.splitlines() if "] - epoch " in line] == ["0", "1"]
    run_dir = tmp_path / "outputs" / "r"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished"
    assert [r["epoch"] for r in metrics["epochs"]] == [0, 1]
    final = metrics["final"]
    assert final == metrics["epochs"][-1] and final["test_images"] == 450
    assert 0 <= final["test_top1"] <= final["test_top5"] <= 100
    assert metrics["best"]["test_top1"] == max(r["test_top1"] for r in metrics["epochs"])
    assert metrics["images_per_s"] > 0 and metrics["num_parameters"] > 0
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["max_epochs"] == 2
    assert "trainer.max_epochs=2" in yaml.safe_load((run_dir / "overrides.yaml").read_text())
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 2 * (1347 // 64)
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["model"])
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))  # the epochs as a table (pandas-readable)
    assert [float(r["test_top1"]) for r in rows] == [r["test_top1"] for r in metrics["epochs"]]
    assert list(rows[0])[:3] == ["epoch", "train_loss", "train_top1"]
    start = yaml.safe_load((run_dir / "environment.yaml").read_text())["starts"]
    assert len(start) == 1 and start[0]["world_size"] == 1 and start[0]["versions"]["torch"] == torch.__version__
    assert "hydra.run.dir=outputs/r" in start[0]["command"] and start[0]["host"]
    assert start[0]["git"] is None or len(start[0]["git"]["commit"]) == 40  # a checkout: its commit and dirty flag
    assert list((run_dir / "tb" / "hparams").glob("events.out.tfevents.*"))  # TensorBoard's hparams entry


def test_default_run_dirs_do_not_collide_in_the_same_second(tmp_path, monkeypatch):
    from lgm_gcp.config import resolvers

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(resolvers, "_UNIQUE", {})
    first = resolvers.unique_dir("outputs/2026-01-01/10-00-00")
    monkeypatch.setattr(resolvers, "_UNIQUE", {})  # a second process
    second = resolvers.unique_dir("outputs/2026-01-01/10-00-00")
    assert first != second and Path(first).is_dir() and Path(second).is_dir()
    assert resolvers.unique_dir("outputs/2026-01-01/10-00-00") == second  # memoised within a process


@pytest.mark.slow
def test_multirun_job_dirs_are_named_from_overrides(tmp_path):
    result = run_cli("-m", *TINY[:-1], "trainer.max_epochs=1", "trainer.max_steps=2", "seed=0,1",
                     "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert names == ["backbone.widths=[8,16],seed=0,trainer.batch_size=64,trainer.max_epochs=1,trainer.max_steps=2",
                     "backbone.widths=[8,16],seed=1,trainer.batch_size=64,trainer.max_epochs=1,trainer.max_steps=2"]
    for name in names:
        assert json.loads((tmp_path / "sweep" / name / "metrics.json").read_text())["status"] == "finished"


def _weights(run_dir):
    return torch.load(Path(run_dir) / "checkpoints" / "last.pt", weights_only=True)["model"]


# Dropout 0.5 makes every step draw from the global torch RNG: a resume that does not restore the
# RNG state draws other masks and ends with other weights.
DROPOUT = "head.dropout=0.5"


def test_resume_at_epoch_boundary_is_bitwise_equal(tmp_path, tiny_cfg):
    cfg = tiny_cfg("trainer.max_epochs=3", DROPOUT)
    run(cfg, tmp_path / "straight")
    run(tiny_cfg("trainer.max_epochs=3", "trainer.max_steps=21", DROPOUT), tmp_path / "resumed")  # epoch 0 only
    summary = run(cfg, tmp_path / "resumed")  # same dir: auto-resume from last.pt
    assert [r["epoch"] for r in summary["epochs"]] == [0, 1, 2]
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_mid_epoch_is_bitwise_equal_in_weights_and_metrics(tmp_path, tiny_cfg):
    cfg = tiny_cfg("trainer.max_epochs=2", "trainer.checkpoint_every=5", DROPOUT)
    straight = run(cfg, tmp_path / "straight")
    # a crash at step 25 (simulated: the run stops there without its end-of-epoch checkpoint)
    run(tiny_cfg("trainer.max_epochs=2", "trainer.checkpoint_every=5", "trainer.max_steps=25", DROPOUT),
        tmp_path / "cut")
    ckpt = torch.load(tmp_path / "cut/checkpoints/last.pt", weights_only=True)
    assert (ckpt["step"], ckpt["epoch"], ckpt["step_in_epoch"]) == (25, 1, 4)
    resumed = run(cfg, tmp_path / "cut")
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["epoch"] for r in resumed["epochs"]] == [0, 1]  # the cut epoch's partial record is replaced
    assert resumed["final"]["test_top1"] == straight["final"]["test_top1"]


def test_rerun_of_a_run_that_reached_max_steps_trains_nothing(tmp_path, tiny_cfg):
    cfg = tiny_cfg("trainer.max_epochs=2", "trainer.max_steps=3")
    first = run(cfg, tmp_path)
    assert first["status"] == "finished" and first["ended_by"] == "max_steps"
    before = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    for _ in range(2):
        again = run(cfg, tmp_path)
        after = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
        assert after["step"] == 3 and all(torch.equal(before["model"][k], after["model"][k]) for k in after["model"])
        assert again["status"] == "finished" and again["epochs"] == first["epochs"]
    # a larger budget continues from step 3 and redoes the cut epoch to its end
    longer = run(tiny_cfg("trainer.max_epochs=2"), tmp_path)
    assert longer["ended_by"] == "max_epochs" and [r["epoch"] for r in longer["epochs"]] == [0, 1]
    assert torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)["step"] == 2 * (1347 // 64)


def test_resume_restores_step_lr_rng_and_weights_over_a_wrong_lr(tmp_path, tiny_cfg):
    """detectron2-style: rebuild with a deliberately wrong LR and fresh weights, call the trainer's
    resume path, and check that the step, the LR, the weights and the RNG state came back."""
    from lgm_gcp.config.schema import TrainerConfig
    from lgm_gcp.engine.distributed import DistEnv
    from lgm_gcp.engine.train import resume, typed
    from lgm_gcp.models.build import build_model
    from lgm_gcp.optim import build_schedule
    from lgm_gcp.options.instantiate import instantiate

    cfg = tiny_cfg("trainer.max_epochs=1", DROPOUT)
    run(cfg, tmp_path)
    payload = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    data = instantiate(cfg["dataset"])
    torch.manual_seed(12345)  # other initial weights and another RNG state than the run's
    model = build_model(cfg, data.num_classes, data.in_channels)
    optimizer = instantiate(cfg["optimizer"])(model, lr=999.0)
    state, history, _, loaded_from = resume(tmp_path, cfg, typed(TrainerConfig, cfg["trainer"]), DistEnv(), model,
                                            optimizer, None, None)
    steps = 1347 // 64
    assert state.step == steps and state.epoch == 1 and len(history) == 1
    assert loaded_from == f"{tmp_path / 'checkpoints' / 'last.pt'} (step {steps})"
    last_lr = build_schedule(cfg["lr_policy"], cfg["optimizer"])(steps - 1, steps)
    assert all(g["lr"] == pytest.approx(last_lr * g["lr_mult"]) for g in optimizer.param_groups)
    assert all(torch.equal(p, payload["model"][k]) for k, p in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), payload["rng"]["torch"])


def test_resume_with_changed_config_is_refused_and_keeps_files(tmp_path, tiny_cfg):
    run(tiny_cfg("trainer.max_epochs=1"), tmp_path)
    before = (tmp_path / "config.yaml").read_text()
    with pytest.raises(checkpoint.CheckpointError, match=r"config changed \(optimizer.weight_decay: 0.0005 -> 0.001"):
        run(tiny_cfg("trainer.max_epochs=2", "optimizer.weight_decay=1e-3"), tmp_path)
    assert (tmp_path / "config.yaml").read_text() == before


def test_corrupt_checkpoint_gives_clear_error(tmp_path, tiny_cfg):
    run(tiny_cfg("trainer.max_epochs=1"), tmp_path)
    last = tmp_path / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(checkpoint.CheckpointError, match="corrupt or truncated"):
        run(tiny_cfg("trainer.max_epochs=2"), tmp_path)


def test_nan_loss_stops_with_step(tmp_path, tiny_cfg):
    with pytest.raises(FloatingPointError, match=r"non-finite loss (nan|inf) at step 1 \(epoch 0\)"):
        run(tiny_cfg("lr_policy.base_lr=1e30", "trainer.max_epochs=1"), tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"


def test_link_or_copy_between_links_of_one_file_leaves_no_temporary(tmp_path):
    last, prev = tmp_path / "last.pt", tmp_path / "last-prev.pt"
    last.write_bytes(b"x")
    checkpoint.link_or_copy(last, prev)
    checkpoint.link_or_copy(last, prev)  # a kill between link and replace leaves them one inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last-prev.pt", "last.pt"]
    (tmp_path / ".last.pt.tmp123").write_bytes(b"half")
    assert [p.name for p in checkpoint.remove_stale_temporaries(tmp_path)] == [".last.pt.tmp123"]


def test_progress_bars_only_on_a_terminal(monkeypatch):
    import sys

    from lgm_gcp.engine.runlog import progress

    items = [1, 2]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert progress(items, 2, "epoch 0", enabled=True) is items
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = progress(items, 2, "epoch 0", enabled=True)
    assert bar is not items and list(bar) == items
    assert progress(items, 2, "epoch 0", enabled=False) is items


def test_ten_crop_average_of_logits_or_of_softmax():
    """Three crops of one image with logits (5, 0), (5, 0), (0, 20). Averaging the logits gives
    (10/3, 20/3): class 1. Averaging the softmax gives ((2·0.99331 + 2e-9)/3, (2·0.00669 + 1)/3) =
    (0.66221, 0.33779): class 0. The 3G-Net Places365 presets average logits, as its script does."""
    import math

    from lgm_gcp.engine.train import ten_crop_logits

    from conftest import compose

    crops = torch.tensor([[5.0, 0.0], [5.0, 0.0], [0.0, 20.0]])
    torch.testing.assert_close(ten_crop_logits(crops, 3, "logits"), torch.tensor([[10 / 3, 20 / 3]]))
    p5 = 1 / (1 + math.exp(-5))
    expected = [(2 * p5 + 1 / (1 + math.exp(20))) / 3, (2 * (1 - p5) + 1 / (1 + math.exp(-20))) / 3]
    torch.testing.assert_close(ten_crop_logits(crops, 3, "softmax").exp(), torch.tensor([expected]))
    for preset in ("g3_resnet50_places365", "g3_resnet101_places365"):
        assert compose(f"experiment={preset}").eval.ten_crop_average == "logits"
    assert compose().eval.ten_crop_average == "softmax"


def test_environment_record_keeps_every_start_and_knows_a_checkout(tmp_path):
    """A resumed (or requeued) run appends its start to environment.yaml; the git state is that of the
    lgm-gcp checkout (None outside one, e.g. an install from a wheel)."""
    from lgm_gcp.engine.record import append_environment, git_state

    append_environment(tmp_path, 1)
    append_environment(tmp_path, 8)
    starts = yaml.safe_load((tmp_path / "environment.yaml").read_text())["starts"]
    assert [s["world_size"] for s in starts] == [1, 8]
    assert git_state(tmp_path) is None
