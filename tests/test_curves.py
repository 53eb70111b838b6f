"""lgm-gcp-plot-curves: per-group mean / min / max of train loss and test top-1 per epoch."""

import csv
import json
from pathlib import Path

import pytest

from lgm_gcp.analysis.curves import cli


def run_folder(root: Path, name: str, choices: dict, losses: list, top1: list, seed: int = 0) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"seed: {seed}\nloss:\n  reg_lambda: 0.3\n")
    (folder / "choices.yaml").write_text("".join(f"{k}: {v}\n" for k, v in choices.items()))
    epochs = [{"epoch": e, "train_loss": loss, "test_top1": acc} for e, (loss, acc) in enumerate(zip(losses, top1))]
    (folder / "metrics.json").write_text(json.dumps({"status": "finished", "epochs": epochs}))


@pytest.fixture
def sweep(tmp_path):
    gap, gcp = {"head": "gap", "lr_policy": "norm"}, {"head": "gcp", "lr_policy": "norm"}
    run_folder(tmp_path, "gap0", gap, [2.0, 1.0, 0.5], [40.0, 60.0, 70.0])
    run_folder(tmp_path, "gap1", gap, [2.2, 1.2], [42.0, 58.0], seed=1)  # one epoch fewer: still running
    run_folder(tmp_path, "gcp0", gcp, [1.5, 0.7, 0.3], [50.0, 70.0, 80.0])
    return tmp_path


def rows_of(path: Path) -> dict:
    return {(r["group"], int(r["epoch"])): r for r in csv.DictReader(open(path))}


def test_groups_by_the_differing_choice_and_averages_the_epochs_all_runs_reached(sweep, tmp_path, capsys):
    cli([str(sweep), "--out", str(tmp_path / "out")])
    rows = rows_of(tmp_path / "out" / "curves.csv")
    # the choices that differ: head only (lr_policy is norm everywhere); gap's two runs share epochs 0 and 1
    assert set(rows) == {("head=gap", 0), ("head=gap", 1), ("head=gcp", 0), ("head=gcp", 1), ("head=gcp", 2)}
    gap1 = rows[("head=gap", 1)]
    assert int(gap1["runs"]) == 2
    assert float(gap1["train_loss_mean"]) == pytest.approx((1.0 + 1.2) / 2)
    assert (float(gap1["test_top1_min"]), float(gap1["test_top1_max"])) == (58.0, 60.0)
    assert float(rows[("head=gcp", 2)]["test_top1_mean"]) == 80.0
    assert (tmp_path / "out" / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_group_by_two_keys_and_a_dotted_key(sweep, tmp_path):
    cli([str(sweep), "--group-by", "head", "lr_policy", "loss.reg_lambda", "--out", str(tmp_path / "o")])
    assert ("head=gcp, lr_policy=norm, loss.reg_lambda=0.3", 2) in rows_of(tmp_path / "o" / "curves.csv")


def test_an_unknown_key_or_an_empty_folder_is_one_line(sweep, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli([str(sweep), "--group-by", "heads"])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--group-by heads: no run has this key" in err[0] and "head, lr_policy" in err[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        cli([str(tmp_path / "empty")])
    assert "no run with a metrics.json" in capsys.readouterr().err
