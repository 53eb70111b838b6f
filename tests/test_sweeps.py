"""Multirun sweeps: a failed job does not stop the others; parallel jobs with the joblib launcher."""

import importlib.util
import json

import pytest
import yaml

from conftest import run_cli
from datafiles import make_tree

TESTS = __import__("pathlib").Path(__file__).parent

SWEEP = ["backbone.widths=[4,8]", "trainer.max_epochs=1", "trainer.max_steps=3", "trainer.progress=false"]


@pytest.mark.slow
def test_failed_job_does_not_stop_the_sweep_and_is_summarised(tmp_path):
    result = run_cli("-m", *SWEEP, "lr_policy.base_lr=1e30,0.1", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 1
    jobs = [json.loads(line) for line in (tmp_path / "sweep" / "jobs.jsonl").read_text().splitlines()]
    assert [j["status"] for j in jobs] == ["FAILED", "COMPLETED"]
    good = tmp_path / "sweep" / "backbone.widths=[4,8],lr_policy.base_lr=0.1,trainer.max_epochs=1,trainer.max_steps=3"
    assert json.loads((good / "metrics.json").read_text())["final"]["test_images"] == 450
    assert "1 of 2 jobs completed, 1 failed" in result.stderr
    assert "FAILED backbone.widths=[4,8],lr_policy.base_lr=1e+30" in result.stderr
    assert "non-finite loss" in result.stderr


@pytest.mark.slow
def test_a_key_inside_a_swept_group_reaches_every_job(tmp_path):
    """Hydra composes a sweep's first config without its swept overrides; lr_policy.family is not a
    key of the default lr_policy, so without sweep_safe this command fails before any job."""
    result = run_cli("-m", *SWEEP, "lr_policy=norm,fast", "lr_policy.family=mobilenet_v2", "lr_policy.batch_size=64",
                     "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    base_lrs = {}
    for job in (tmp_path / "sweep").glob("*lr_policy=*"):
        cfg = yaml.safe_load((job / "config.yaml").read_text())
        assert cfg["lr_policy"]["family"] == "mobilenet_v2"
        base_lrs[cfg["lr_policy"]["policy"]] = cfg["lr_policy"]["base_lr"]
    assert base_lrs == {"norm": 0.045, "fast": 0.06}  # MobileNetV2's LR_norm and LR_fast recipes


def test_sweep_safe_turns_keys_inside_swept_groups_into_one_value_sweeps():
    from lgm_gcp.config.compose import sweep_safe

    assert sweep_safe(["head=gap,gcp", "lr_policy=norm", "head.dim=64", "lr_policy.epochs=3", "seed=0,1",
                       "+head.extra=1"]) == ["head=gap,gcp", "lr_policy=norm", "head.dim=choice(64)",
                                             "lr_policy.epochs=3", "seed=0,1", "+head.extra=1"]
    assert sweep_safe(["backbone.widths=[8,16]"]) == ["backbone.widths=[8,16]"]


def needs(module: str):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"needs {module}: pip install -e '.[sweep]' (README's install includes it)")


@pytest.mark.slow
@needs("hydra_plugins.hydra_joblib_launcher")
def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    """Each job's backbone waits at a rendezvous until both jobs have built it: run one after the
    other, the first job would fail after 120 s and the sweep with it."""
    meet = tmp_path / "rendezvous"
    meet.mkdir()
    result = run_cli("-m", "hydra/launcher=joblib_gpus", "hydra.launcher.n_jobs=2", *SWEEP, "seed=0,1",
                     "backbone._target_=helpers.Rendezvous", "hydra.sweep.dir=sweep", cwd=tmp_path, timeout=900,
                     env_extra={"LGM_GCP_GPUS": "2", "LGM_GCP_TEST_RENDEZVOUS": str(meet),
                                "LGM_GCP_TEST_PARTIES": "2", "PYTHONPATH": str(TESTS)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(meet.glob("arrived-*"))) == 2  # two processes
    runs = []
    for seed in (0, 1):
        job = tmp_path / "sweep" / (f"backbone._target_=helpers.Rendezvous,backbone.widths=[4,8],seed={seed},"
                                    "trainer.max_epochs=1,trainer.max_steps=3")
        runs.append(json.loads((job / "metrics.json").read_text()))
        assert runs[-1]["status"] == "finished"
    assert "2 of 2 jobs completed" in result.stderr


@pytest.mark.slow
@needs("hydra_plugins.hydra_joblib_launcher")
def test_a_joblib_sweep_over_generated_presets_composes_each_in_its_worker(tmp_path):
    """The metafiles' presets come from a config source of our own (metafile://), which each joblib worker
    process must know when it composes its job: both jobs run, each with its own preset's head."""
    make_tree(tmp_path / "tree")
    result = run_cli("-m", "hydra/launcher=joblib_gpus", "hydra.launcher.n_jobs=2",
                     "experiment=gcp_resnet18_gap_norm,gcp_resnet18_gcp_norm", f"dataset.root={tmp_path / 'tree'}",
                     "dataset.num_classes=3", "trainer.max_epochs=1", "trainer.max_steps=1", "trainer.batch_size=4",
                     "trainer.progress=false", "hydra.sweep.dir=sweep", cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    heads = {}
    for job in (tmp_path / "sweep").glob("*experiment=*"):
        choices = yaml.safe_load((job / "choices.yaml").read_text())
        heads[choices["experiment"]] = choices["head"]
        assert json.loads((job / "metrics.json").read_text())["status"] == "finished"
    assert heads == {"gcp_resnet18_gap_norm": "gap", "gcp_resnet18_gcp_norm": "gcp"}


@needs("hydra_plugins.hydra_submitit_launcher")
@pytest.mark.parametrize("overrides, gpus", [
    ([], 1),                                                   # one task spawning trainer.devices=1 worker
    (["trainer.devices=8"], 8),                                # one task, 8 workers
    (["hydra.launcher.tasks_per_node=4"], 4),                  # one rank per task
    (["trainer.accelerator=cpu"], None),                       # a CPU partition: no GPU asked for
    (["trainer.accelerator=cpu", "hydra.launcher.tasks_per_node=4"], None),
])
def test_slurm_launcher_asks_for_one_gpu_per_rank(overrides, gpus):
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from lgm_gcp.config.register import register_schemas

    register_schemas()
    with initialize_config_module("lgm_gcp.conf", version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.lgm_gcp_slurm.launcher.SlurmLauncher"
    assert launcher["gpus_per_node"] == gpus
    # what a typical partition takes: its own defaults for CPUs and memory, a day's time limit
    assert launcher["cpus_per_task"] is None and launcher["mem_gb"] is None and launcher["timeout_min"] == 1440


@pytest.mark.slow  # a sweep, table or kill/resume test (the brief's slow tier)
@needs("hydra_plugins.hydra_submitit_launcher")
def test_slurm_tasks_per_node_with_several_devices_is_refused_before_submitting(tmp_path):
    result = run_cli("-m", "hydra/launcher=slurm", "hydra.launcher.tasks_per_node=2", "trainer.devices=2",
                     "seed=0,1", "hydra.sweep.dir=sweep", cwd=tmp_path, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "lgm-gcp-train: error: hydra.launcher.tasks_per_node=2 with trainer.devices=2: each SLURM task is one "
        "rank and drives one device; use trainer.devices=1 with one task per GPU, or one task per node "
        "(hydra.launcher.tasks_per_node=1, srun --ntasks-per-node=1) with trainer.devices=G"]
    assert not (tmp_path / "sweep" / ".submitit").exists()


def test_sweep_summary_counts_each_job_once_by_its_latest_record(tmp_path):
    """A sweep run twice (the second time to finish its failed job) appends to jobs.jsonl; the
    summary speaks of its two jobs, both completed now."""
    from lgm_gcp.engine.sweep import summary

    records = [{"job": "seed=0", "status": "COMPLETED", "error": None},
               {"job": "seed=1", "status": "FAILED", "error": "UserError: boom"},
               {"job": "seed=0", "status": "COMPLETED", "error": None},
               {"job": "seed=1", "status": "COMPLETED", "error": None}]
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert summary(tmp_path) == f"sweep {tmp_path}: 2 of 2 jobs completed"
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:2]))
    assert summary(tmp_path).splitlines() == [f"sweep {tmp_path}: 1 of 2 jobs completed, 1 failed:",
                                              "  FAILED seed=1: UserError: boom"]


def test_sweep_summary_counts_only_finished_runs_and_names_how_the_others_ended(tmp_path):
    """A preempted job (not yet requeued), a cancelled and a timed-out one are not completed; a requeued
    job's later record replaces its PREEMPTED one."""
    from lgm_gcp.engine.sweep import summary

    records = [{"job": "seed=0", "status": "PREEMPTED", "error": "stopped by a signal"},
               {"job": "seed=1", "status": "PREEMPTED", "error": "stopped by a signal"},
               {"job": "seed=2", "status": "CANCELLED", "error": "SLURM job 7_2 ended CANCELLED by 0"},
               {"job": "seed=3", "status": "TIMEOUT", "error": "SLURM job 7_3 ended TIMEOUT"},
               {"job": "seed=0", "status": "COMPLETED", "error": None}]
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert summary(tmp_path).splitlines() == [
        f"sweep {tmp_path}: 1 of 4 jobs completed, 1 cancelled, 1 preempted, 1 timeout:",
        "  PREEMPTED seed=1: stopped by a signal",
        "  CANCELLED seed=2: SLURM job 7_2 ended CANCELLED by 0",
        "  TIMEOUT seed=3: SLURM job 7_3 ended TIMEOUT"]


def test_only_rank_0_of_a_multi_task_job_records_it(tmp_path, monkeypatch):
    from lgm_gcp.engine.sweep import record_job

    monkeypatch.delenv("RANK", raising=False)
    for procid in ("1", "0"):
        monkeypatch.setenv("SLURM_PROCID", procid)
        record_job(tmp_path, "seed=0", "COMPLETED")
    monkeypatch.setenv("RANK", "1")  # RANK, where set, wins
    record_job(tmp_path, "seed=0", "FAILED", "from rank 1")
    assert [json.loads(line)["status"] for line in (tmp_path / "jobs.jsonl").read_text().splitlines()] == ["COMPLETED"]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib_gpus"])
def test_a_sweep_without_a_sweep_dir_keeps_all_its_jobs_in_one_folder(tmp_path, launcher):
    """The default hydra.sweep.dir (outputs/multirun/<date>/<time>, claimed by unique_dir) is resolved once,
    in the launching process: each joblib worker resolving it again made a folder per job (issue 24)."""
    if launcher == "joblib_gpus" and importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None:
        pytest.skip("needs hydra_plugins.hydra_joblib_launcher: pip install -e '.[sweep]'")
    env = {"LGM_GCP_GPUS": "2"}
    result = run_cli("-m", f"hydra/launcher={launcher}", *SWEEP, "seed=0,1", cwd=tmp_path, env_extra=env)
    assert result.returncode == 0, result.stderr[-2000:]
    sweeps = [p for p in (tmp_path / "outputs" / "multirun").glob("*/*") if p.is_dir()]
    assert len(sweeps) == 1, sweeps
    jobs = sorted(p.name for p in sweeps[0].iterdir() if (p / "metrics.json").is_file())
    assert [j.split("seed=")[1][0] for j in jobs] == ["0", "1"]
    assert "2 of 2 jobs completed" in result.stderr + result.stdout
