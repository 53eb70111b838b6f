"""Trackers of the ``logger`` group, for real: MLflow against a local file store, W&B in offline mode,
TensorBoard and metrics.csv; rank 0 alone (tests/test_distributed.py); a start failure is one line
(tests/test_errors.py)."""

import json

import pytest

from lgm_gcp.engine.train import run

from conftest import TINY, resolved

QUICK = [*TINY, "trainer.deterministic=true", "trainer.log_every=10"]  # 2 epochs of 21 steps


def epochs_of(run_dir):
    return [r for r in json.loads((run_dir / "metrics.json").read_text())["epochs"]]


def test_mlflow_gets_params_metrics_status_and_checkpoint_and_a_resume_continues_its_run(tmp_path, monkeypatch):
    """At its defaults, as a user without a server runs it: no URI, no MLflow variable; the store is
    outputs/mlflow.db under the working directory (a file store or MLflow's own sqlite:///mlflow.db default
    stopped mlflow-skinny 3 at start)."""
    mlflow = pytest.importorskip("mlflow")
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    tracker = ["logger=[csv,mlflow]"]
    run(resolved(*QUICK, *tracker, "trainer.max_epochs=1"), tmp_path / "run")
    run(resolved(*QUICK, *tracker), tmp_path / "run")  # resumed for its second epoch: the same MLflow run goes on
    assert (tmp_path / "outputs" / "mlflow.db").is_file()
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    (found,) = client.search_runs([client.get_experiment_by_name("lgm-gcp").experiment_id])
    assert json.loads((tmp_path / "run" / "trackers.json").read_text()) == {"mlflow": found.info.run_id}
    assert found.info.status == "FINISHED" and found.info.run_name == "run"
    assert found.data.params["trainer.batch_size"] == "64" and found.data.params["backbone.widths"] == "[8, 16]"
    assert found.data.tags["lgm_gcp.status"] == "finished"
    assert found.data.tags["lgm_gcp.checkpoint"] == str(tmp_path / "run" / "checkpoints" / "last.pt")
    logged = sorted((m.step, m.value) for m in client.get_metric_history(found.info.run_id, "epoch/test_top1"))
    assert [step for step, _ in logged] == [21, 42]  # at each epoch's last step, one from each start
    assert [v for _, v in logged] == pytest.approx([r["test_top1"] for r in epochs_of(tmp_path / "run")])
    steps = sorted(m.step for m in client.get_metric_history(found.info.run_id, "train/loss"))
    assert steps == [0, 10, 20, 30, 40]  # every trainer.log_every=10 steps of 42, from step 0


def wandb_records(path):
    """The records of a W&B transaction log (``run-<id>.wandb``): a 7-byte header (":W&B", magic,
    version), then LevelDB-log framed protobuf ``Record``s (4-byte CRC, 2-byte length, 1-byte type:
    1 full, 2 first, 3 middle, 4 last) in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, offset, pending = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while offset + 7 <= len(data):
        left = 32768 - offset % 32768
        if left < 7:
            offset += left
            continue
        length, kind = int.from_bytes(data[offset + 4: offset + 6], "little"), data[offset + 6]
        payload, offset = data[offset + 7: offset + 7 + length], offset + 7 + length
        if kind == 0:
            continue
        pending += payload
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def no_wandb_login(monkeypatch, tmp_path):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def test_wandb_login_is_found_in_the_environment_or_netrc(tmp_path, monkeypatch):
    from lgm_gcp.loggers.wandb_tracker import has_login

    no_wandb_login(monkeypatch, tmp_path)
    assert not has_login()
    (tmp_path / "no-netrc").write_text("machine api.wandb.ai\n  login user\n  password 0123abcd\n")
    assert has_login()
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # a self-hosted server: its own entry
    assert not has_login()
    monkeypatch.setenv("WANDB_API_KEY", "0123abcd")
    assert has_login()


def test_wandb_offline_gets_config_history_and_summary_and_a_resume_continues_its_run(tmp_path, monkeypatch,
                                                                                     caplog):
    """At its defaults without a login (mode auto): offline, with one line saying so; W&B's own default
    online mode stopped such a run with 'No API key configured'."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    no_wandb_login(monkeypatch, tmp_path)
    tracker = ["logger=[wandb]"]
    run(resolved(*QUICK, *tracker, "trainer.max_epochs=1"), tmp_path / "run")
    run(resolved(*QUICK, *tracker), tmp_path / "run")
    run_id = json.loads((tmp_path / "run" / "trackers.json").read_text())["wandb"]
    logs = sorted((tmp_path / "run" / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(logs) == 2  # one transaction log per start, one W&B run id
    config, history, summary = {}, [], {}
    for log in logs:
        for record in wandb_records(log):
            kind = record.WhichOneof("record_type")
            if kind in ("run", "config"):  # the run record carries the config given to wandb.init
                items = record.run.config.update if kind == "run" else record.config.update
                config.update({i.key: json.loads(i.value_json) for i in items})
            elif kind == "history":
                history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                for i in record.history.item})
            elif kind == "summary":
                summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                for i in record.summary.update})
    assert config["trainer"]["batch_size"] == 64 and config["choices"]["seed"] == 0
    logged = [(h["_step"], h["epoch/test_top1"]) for h in history if "epoch/test_top1" in h]
    expected = [r["test_top1"] for r in epochs_of(tmp_path / "run")]
    assert [step for step, _ in logged] == [21, 42] and [v for _, v in logged] == pytest.approx(expected)
    assert summary["checkpoint"] == str(tmp_path / "run" / "checkpoints" / "last.pt")
    assert summary["status"] == "finished" and summary["final/test_top1"] == pytest.approx(expected[-1])
    assert "no W&B login found" in caplog.text


def test_the_default_trackers_are_tensorboard_and_metrics_csv(tmp_path):
    import csv

    run(resolved(*QUICK), tmp_path / "run")
    table = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    expected = [r["test_top1"] for r in epochs_of(tmp_path / "run")]
    assert [float(r["test_top1"]) for r in table] == pytest.approx(expected)
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
    run(resolved(*QUICK, "logger=[]"), tmp_path / "none")
    assert not (tmp_path / "none" / "metrics.csv").exists() and not (tmp_path / "none" / "tb").exists()
    assert (tmp_path / "none" / "metrics.json").is_file()  # always written: the table and resumes read it


def test_a_tracker_failing_mid_run_is_reported_once_and_the_run_finishes(tmp_path, caplog):
    cfg = resolved(*QUICK, "+logger.flaky._target_=helpers.FailingTracker")
    summary = run(cfg, tmp_path / "run")
    assert summary["status"] == "finished"
    warnings = [r.getMessage() for r in caplog.records if "logger.flaky failed" in r.getMessage()]
    assert len(warnings) == 1 and "tracking server went away" in warnings[0]
    assert not (tmp_path / "run" / "tracker_finished").exists()  # dropped: never told the end
