"""SLURM: one rank per task (engine/slurm.py), and the whole cluster path against a real one-node SLURM
cluster (scripts/slurm_cluster.sh: Debian's slurm-wlm with munge and slurmdbd accounting), in the slow tier.

The cluster tests use the cluster that ``SLURM_CONF`` names (.ci/run starts one), or start their own
through the script when this machine has SLURM installed and runs as root; elsewhere they skip, except
under CI, where a missing cluster is a failure."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lgm_gcp.engine.slurm import export_task_ranks, task_ranks, tasks_on_each_node

from conftest import run_cli

TESTS = Path(__file__).parent
ROOT = TESTS.parent

# ----------------------------------------------------------------------------- SLURM's variables


def test_task_counts_expand_slurms_compressed_form():
    assert tasks_on_each_node("4") == [4]
    assert tasks_on_each_node("2(x3),1") == [2, 2, 2, 1]
    with pytest.raises(ValueError, match="cannot read"):
        tasks_on_each_node("two")


STEP = {"SLURM_JOB_ID": "77", "SLURM_STEP_NUM_TASKS": "6", "SLURM_STEP_TASKS_PER_NODE": "4,2",
        "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_STEP_NODELIST": "gpu[07-08]",
        "MASTER_ADDR": "gpu07"}


def test_a_task_of_a_multi_node_step_reads_its_rank_from_slurm():
    """Task 5 of 6 (4 on the first node, 2 on the second) is local rank 1 of 2 on node 1; every task of
    job 77 draws the same port (Random(job id), as submitit's TorchDistributedEnvironment does)."""
    ranks = task_ranks(STEP)
    port = ranks.pop("MASTER_PORT")
    assert ranks == {"RANK": "5", "WORLD_SIZE": "6", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                     "MASTER_ADDR": "gpu07"}
    assert port == task_ranks({**STEP, "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"})["MASTER_PORT"]
    assert 20000 <= int(port) <= 60000 and task_ranks({**STEP, "MASTER_PORT": "29500"})["MASTER_PORT"] == "29500"


@pytest.mark.parametrize("environ", [
    {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "2", "SLURM_PROCID": "0"},  # the batch script's shell: no step
    {**STEP, "SLURM_STEP_NUM_TASKS": "1"},                               # srun -n 1
    {**STEP, "RANK": "3"},                                               # torchrun inside the allocation
    {},                                                                   # no SLURM at all
])
def test_one_process_steps_the_batch_shell_and_torchrun_are_left_alone(environ):
    environ = dict(environ)
    assert task_ranks(environ) is None and export_task_ranks(environ) is False and "WORLD_SIZE" not in environ


# ------------------------------------------------------------------------------- a real cluster


def cluster_alive(env) -> bool:
    return shutil.which("sinfo") is not None and subprocess.run(
        ["sinfo", "-h"], env=env, capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The environment in which SLURM's commands reach a live cluster."""
    env = dict(os.environ)
    started = None
    if not ("SLURM_CONF" in env and cluster_alive(env)):
        if shutil.which("slurmctld") and os.geteuid() == 0:
            started = tmp_path_factory.mktemp("slurm")
            env["LGM_GCP_SLURM_DIR"] = str(started)
            out = subprocess.run(["bash", str(ROOT / "scripts" / "slurm_cluster.sh"), "start"], env=env,
                                 capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stderr
            env["SLURM_CONF"] = str(started / "slurm.conf")
        elif os.environ.get("CI"):
            pytest.fail("no SLURM cluster: .ci/run starts one with scripts/slurm_cluster.sh")
        else:
            pytest.skip("no SLURM cluster (SLURM_CONF unset; as root with slurm-wlm installed the tests start one)")
    env.update(PYTHONPATH=str(TESTS), LGM_GCP_TEST_STEP_S="0.25")
    env.pop("HYDRA_FULL_ERROR", None)
    yield env
    if started is not None:
        subprocess.run(["bash", str(ROOT / "scripts" / "slurm_cluster.sh"), "stop"], env=env, timeout=300)


def slurm(env, *cmd) -> str:
    out = subprocess.run(list(cmd), env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{' '.join(cmd)}: {out.stderr}"
    return out.stdout


def wait_until(what, predicate, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def jobs_named(env, name) -> dict:
    """{job id: (state, reason)} of the queued jobs named ``name``, array tasks one by one."""
    lines = slurm(env, "squeue", "-h", "-r", "-n", name, "-o", "%i|%T|%r").splitlines()
    return {i: (state, reason) for i, state, reason in (line.split("|") for line in lines)}


def history(env, job_id) -> list:
    """Every state the job has been in, one per start, as accounting recorded them."""
    return [line.split("|")[1].split()[0] for line in
            slurm(env, "sacct", "-n", "-D", "-X", "-P", "-o", "JobID,State", "-j", job_id).splitlines()]


def final_history(env, job_id) -> list:
    """``history`` once accounting has recorded the job's end (it lags squeue and the job's own files)."""
    return wait_until(f"accounting to record the end of {job_id}", lambda: (
        states := history(env, job_id)) and states[-1] not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING")
        and states, timeout=600)


JOB = ["trainer.accelerator=cpu", "backbone.widths=[8,16]", "trainer.progress=false", "trainer.deterministic=true"]
DDP = [*JOB, "backbone.norm=group", "trainer.max_epochs=1"]
# 84 steps an epoch of a quarter second each: a run still training when the scheduler's signal comes
SLOW = [*JOB, "backbone._target_=helpers.SlowSmallCNN", "trainer.batch_size=16", "trainer.max_epochs=3"]
LONG = [*SLOW, "trainer.max_epochs=4"]  # about 90 s of training: still running when a time limit's signal comes


def sweep(tmp_path, env, name, *overrides, wait=True):
    args = [sys.executable, "-m", "lgm_gcp.entrypoint", "-m", "hydra/launcher=slurm",
            f"hydra.launcher.name={name}", "hydra.sweep.dir=sweep", *overrides]
    if wait:
        return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    return subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def runs(sweep_dir: Path) -> dict:
    return {p.name: json.loads((p / "metrics.json").read_text()) for p in sweep_dir.iterdir()
            if (p / "metrics.json").is_file()}


def records(sweep_dir: Path) -> list:
    return [(r["job"], r["status"]) for r in map(json.loads, (sweep_dir / "jobs.jsonl").read_text().splitlines())]


@pytest.mark.slow
def test_a_2x2_sweep_is_one_array_job_whose_four_runs_finish(tmp_path, cluster):
    result = sweep(tmp_path, cluster, "grid", *JOB, "trainer.max_epochs=1", "seed=0,1", "loss=softmax,lgm")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 of 4 jobs completed" in result.stderr
    finished = runs(tmp_path / "sweep")
    assert len(finished) == 4 and all(m["status"] == "finished" for m in finished.values())
    logs = [p.name for p in (tmp_path / "sweep" / ".submitit").glob("[0-9]*_*")]  # <sweep>/.submitit/<array>_<task>/
    assert len(logs) == 4 and len({name.split("_")[0] for name in logs}) == 1
    assert sorted(status for _, status in records(tmp_path / "sweep")) == ["COMPLETED"] * 4


def training(sweep_dir: Path, job: str) -> bool:
    """Whether the job's run is in its training loop, where the preemption handler is in place (a SIGTERM
    before that is only logged by submitit, and SLURM kills the job KillWait seconds later)."""
    return any("global batch" in log.read_text() for log in sweep_dir.glob(f"*{job}*/train.log"))


def uninterrupted(tmp_path, seed, *overrides) -> dict:
    """The same run in one process here, without SLURM (and without the sleeps, which change no number)."""
    result = run_cli(*SLOW, *overrides, f"seed={seed}", f"hydra.run.dir=straight{seed}", cwd=tmp_path,
                     env_extra={"PYTHONPATH": str(TESTS), "LGM_GCP_TEST_STEP_S": "0"})
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((tmp_path / f"straight{seed}" / "metrics.json").read_text())


def numbers(metrics) -> list:
    """A run's per-epoch numbers, without the timings."""
    timing = ("time", "images_per_s")
    return [{k: v for k, v in r.items() if not any(t in k for t in timing)} for r in metrics["epochs"]]


@pytest.mark.slow
def test_a_time_limit_and_scontrol_requeue_each_checkpoint_mid_epoch_requeue_and_end_as_if_uninterrupted(
        tmp_path, cluster):
    """Job 0 reaches a time limit: SLURM sends SIGUSR2 signal_delay_s before it, the run checkpoints and
    submitit requeues it. Job 1 is requeued by ``scontrol requeue`` (SIGTERM). Both resume from their
    mid-epoch checkpoint and end with the numbers of an uninterrupted run; the launcher waits all the while
    and counts each job once. (The time limit is lowered to 2 minutes once the run is inside its second
    epoch, so that SLURM's signal comes mid-run; the requeued jobs are released from their two-minute
    BeginTime hold and given their time back.)"""
    launcher = sweep(tmp_path, cluster, "requeue", *LONG, "seed=0,1", "hydra.launcher.timeout_min=10",
                     "hydra.launcher.signal_delay_s=60", wait=False)
    try:
        jobs = wait_until("two running jobs", lambda: len(jobs_named(cluster, "requeue")) == 2
                          and all(s == "RUNNING" for s, _ in jobs_named(cluster, "requeue").values())
                          and sorted(jobs_named(cluster, "requeue")))
        wait_until("both runs past their first epoch",
                   lambda: len(list((tmp_path / "sweep").glob("*seed=*/checkpoints/last.pt"))) == 2)
        slurm(cluster, "scontrol", "update", f"JobId={jobs[0]}", "TimeLimit=2")
        slurm(cluster, "scontrol", "requeue", jobs[1])
        for job in jobs:
            wait_until(f"{job} requeued", lambda job=job: jobs_named(cluster, "requeue").get(job, ("",))[0]
                       == "PENDING", timeout=240)
        assert launcher.poll() is None  # still waiting for the requeued runs' results
        for job in jobs:
            slurm(cluster, "scontrol", "update", f"JobId={job}", "TimeLimit=10", "StartTime=now")
        out, err = launcher.communicate(timeout=600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 0, err[-3000:]
    assert "2 of 2 jobs completed" in err
    for job in jobs:
        assert final_history(cluster, job) == ["REQUEUED", "COMPLETED"]
    logs = {job: "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit" / job).glob("*_log.*"))
            for job in jobs}
    assert "SIGUSR2 received" in logs[jobs[0]] and "SIGTERM received" in logs[jobs[1]]
    for job in jobs:  # the checkpoint the signal wrote was inside an epoch
        step = int(logs[job].split("preempted at step ")[1].split(":")[0])
        assert step % 84, f"{job} stopped at the end of an epoch (step {step})"
    for name, metrics in runs(tmp_path / "sweep").items():
        seed = int(name.split("seed=")[1][0])
        assert metrics["status"] == "finished"
        assert numbers(metrics) == numbers(uninterrupted(tmp_path, seed, *LONG[len(SLOW):]))
        assert [s for job, s in records(tmp_path / "sweep") if job == name] == ["PREEMPTED", "COMPLETED"]


@pytest.mark.slow
def test_a_batch_script_without_submitit_requeues_itself_on_sigusr2_and_resumes(tmp_path, cluster):
    """``#SBATCH --signal=USR2@<s>`` and ``srun lgm-gcp-train`` with a folder named by the job id: SLURM's
    time-limit warning (sent here with scancel, at a moment mid-run) checkpoints, rank 0 requeues the job,
    and the requeued job resumes from the folder to the uninterrupted numbers."""
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n#SBATCH --requeue --open-mode=append --signal=USR2@60 -J plain\n"
                      f"#SBATCH -o {tmp_path}/job-%j.out\n"
                      f"srun {sys.executable} -m lgm_gcp.entrypoint {' '.join(SLOW)} seed=0 "
                      f"hydra.run.dir={tmp_path}/run-$SLURM_JOB_ID\n")
    job = slurm(cluster, "sbatch", "--parsable", str(script)).strip()
    wait_until("the run training", lambda: any("global batch" in p.read_text()
                                               for p in tmp_path.glob(f"run-{job}/train.log")))
    slurm(cluster, "scancel", "--signal=USR2", job)
    wait_until("the job requeued", lambda: jobs_named(cluster, "plain").get(job, ("",))[0] == "PENDING")
    slurm(cluster, "scontrol", "update", f"JobId={job}", "StartTime=now")
    assert final_history(cluster, job) == ["REQUEUED", "COMPLETED"]
    log = (tmp_path / f"job-{job}.out").read_text()
    assert "SIGUSR2 received" in log and f"requeued SLURM job {job} after SIGUSR2" in log
    metrics = json.loads((tmp_path / f"run-{job}" / "metrics.json").read_text())
    assert metrics["status"] == "finished" and numbers(metrics) == numbers(uninterrupted(tmp_path, 0))


@pytest.mark.slow
def test_a_cancelled_task_is_reported_as_not_finished_and_the_sweep_fails(tmp_path, cluster):
    launcher = sweep(tmp_path, cluster, "cancel", *SLOW, "trainer.max_epochs=1", "seed=0,1", wait=False)
    try:
        jobs = wait_until("two running jobs", lambda: len(jobs_named(cluster, "cancel")) == 2
                          and all(s == "RUNNING" for s, _ in jobs_named(cluster, "cancel").values())
                          and sorted(jobs_named(cluster, "cancel")))
        wait_until("the second run training", lambda: training(tmp_path / "sweep", "seed=1"))
        slurm(cluster, "scancel", jobs[1])
        out, err = launcher.communicate(timeout=600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 1
    assert "1 of 2 jobs completed, 1 cancelled:" in err
    assert f"SLURM job {jobs[1]} ended CANCELLED" in err and "_log.err" in err
    cancelled = next(m for name, m in runs(tmp_path / "sweep").items() if "seed=1" in name)
    assert cancelled["status"] == "preempted" and cancelled["preempted_by"] == "SIGTERM"  # its checkpoint is kept
    assert final_history(cluster, jobs[1]) == ["CANCELLED"]


@pytest.mark.slow
def test_a_request_the_partition_can_never_run_is_reported_and_cancelled(tmp_path, cluster):
    cpus = int(slurm(cluster, "sinfo", "-h", "-o", "%c").split()[0])
    too_many = f"hydra.launcher.cpus_per_task={cpus + 8}"
    result = sweep(tmp_path, cluster, "toobig", *JOB, "trainer.max_epochs=1", too_many)
    assert result.returncode == 1
    assert "can never start: Reason=PartitionConfig" in result.stderr and f"cpus_per_task={cpus + 8}" in result.stderr
    assert "0 of 1 jobs completed, 1 cancelled" in result.stderr


@pytest.mark.slow
def test_sbatchs_refusal_is_one_line_with_its_reason(tmp_path, cluster):
    """This cluster has no GPUs (no gres): the default trainer.accelerator=auto asks for one GPU a rank."""
    result = sweep(tmp_path, cluster, "gres", "trainer.max_epochs=1")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("lgm-gcp-train: error: sbatch refused the job: Invalid generic resource") and \
        "gpus_per_node=1" in lines[-1] and len([line for line in lines if "error" in line]) == 1


@pytest.mark.slow
def test_two_srun_tasks_form_one_ddp_group_equal_to_one_process(tmp_path, cluster):
    """srun -n 2 in a batch script: each task reads its rank from SLURM, rank 0 picks the folder (none is
    given), and the 2-rank run trains the weights the 1-process run trains (the global batch is split, not
    changed; GroupNorm, whose statistics do not depend on the split)."""
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n#SBATCH -n 2\n#SBATCH -o " + str(tmp_path / "job.out") + "\n"
                      f"srun {sys.executable} -m lgm_gcp.entrypoint " + " ".join(DDP) + "\n")
    out = subprocess.run(["sbatch", "--wait", str(script)], cwd=tmp_path, env=cluster, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, (tmp_path / "job.out").read_text()[-3000:]
    (ddp,) = (tmp_path / "outputs").glob("*/*")  # one folder for both ranks
    assert_same_training(ddp, one_process(tmp_path))


def one_process(tmp_path) -> Path:
    result = run_cli(*DDP, "hydra.run.dir=one", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    return tmp_path / "one"


def assert_same_training(ddp: Path, one: Path) -> None:
    two, single = (json.loads((p / "metrics.json").read_text()) for p in (ddp, one))
    assert two["world_size"] == 2 and two["status"] == "finished" and len(set(two["replica_checksums"])) == 1
    assert two["final"]["test_loss"] == pytest.approx(single["final"]["test_loss"], abs=1e-4)
    a, b = (torch.load(p / "checkpoints" / "last.pt", weights_only=True)["model"] for p in (ddp, one))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)


@pytest.mark.slow
def test_the_launchers_tasks_per_node_are_the_ranks_of_one_job(tmp_path, cluster):
    result = sweep(tmp_path, cluster, "tasks", *DDP, "hydra.launcher.tasks_per_node=2")
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = [p for p in (tmp_path / "sweep").iterdir() if (p / "metrics.json").is_file()]
    assert_same_training(run_dir, one_process(tmp_path))
    assert [status for _, status in records(tmp_path / "sweep")] == ["COMPLETED"]  # rank 0 speaks for the job


def raise_value_error():
    raise ValueError("injected: the job failed outside Hydra's job runner")


def test_a_job_error_is_reported_by_its_exception_line(tmp_path, monkeypatch):
    """submitit's error for a job that raised (the same for its local and SLURM jobs) holds the whole
    traceback between two rules; the summary line takes the exception line from it."""
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.lgm_gcp_slurm.launcher import last_trace_line

    monkeypatch.setenv("PYTHONPATH", str(TESTS))  # the job's process imports this module for the function
    job = submitit.LocalExecutor(folder=tmp_path).submit(raise_value_error)
    error = job.exception()
    assert isinstance(error, submitit.core.utils.FailedJobError)
    assert last_trace_line(str(error)) == "ValueError: injected: the job failed outside Hydra's job runner"
