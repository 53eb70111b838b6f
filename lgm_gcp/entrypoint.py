"""lgm-gcp-train: the one entrypoint (and lgm-gcp-eval, the same run with ``eval.only=true``).

``cli()`` checks the command line with the compose API first (one-line errors for unknown options,
keys and bad values, sweeps included), then hands over to Hydra's ``@hydra.main`` (``--help``,
``--cfg job``, ``-m`` sweeps, run dirs). Under ``torchrun`` (RANK/WORLD_SIZE in the environment) or
``srun -n N`` (one rank per SLURM task, engine/slurm.py) it composes with the compose API instead, on
every rank, and rank 0 picks the run dir.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lgm_gcp.assemble import check_network
from lgm_gcp.config.compose import compose_for_start, compose_with_choices, sweep_safe
from lgm_gcp.config.register import register_schemas
from lgm_gcp.config.resolvers import unique_dir
from lgm_gcp.config.validate import validate
from lgm_gcp.engine import distributed, slurm
from lgm_gcp.engine.launch import launch, setup_worker_logging
from lgm_gcp.engine.runlock import check_run_dir
from lgm_gcp.engine.sweep import SWEEP_DIRS, record_job, summary
from lgm_gcp.errors import ConfigError, UserError, fail

log = logging.getLogger("lgm_gcp")
register_schemas()
PROG = "lgm-gcp-train"


@hydra.main(version_base="1.3", config_path="pkg://lgm_gcp.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        validate(cfg)
        container = OmegaConf.to_container(cfg, resolve=True)
        hydra_cfg = HydraConfig.get()
        choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith(("hydra", "schema"))}
        if slurm.export_task_ranks():  # one rank per task of a submitit job (hydra.launcher.tasks_per_node)
            slurm.check_one_device_per_task(container["trainer"]["devices"], f"{os.environ['WORLD_SIZE']} SLURM tasks")
        try:
            summary = launch(container, run_dir, list(hydra_cfg.overrides.task), choices)
        except SystemExit:  # preempted: checkpointed, and requeued where a scheduler does that
            if hydra_cfg.mode == RunMode.MULTIRUN:
                record_job(hydra_cfg.sweep.dir, run_dir.name, "PREEMPTED",
                           f"stopped by a signal with a checkpoint ({run_dir / 'metrics.json'}); rerun to resume")
            raise
    except UserError as e:  # anything else is a bug in the library and keeps its traceback
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # a sweep goes on with its other jobs and lists this one in its summary
        fail(PROG, e)
    final = summary.get("final") or {}
    log.info("run dir %s: test top-1 %.2f%%", run_dir, final.get("test_top1", float("nan")))
    return final.get("test_top1")


def _parse(argv):
    """Hydra's own command-line parser, so --config-dir, -m, --cfg ... mean what they mean to Hydra (its
    only use of hydra._internal: Hydra has no public parser, and a copy of its flags would drift)."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser().parse_args(argv)


def preflight(argv) -> str | None:
    """Compose once (sweeps reduced to their first value, every swept group option checked, the
    user's ``--config-dir`` included), check the network and an explicit run or sweep dir, all before Hydra
    writes anything. Returns the sweep's folder for ``-m`` without ``hydra.sweep.dir``, claimed now."""
    args = _parse(argv)
    if args.help or args.hydra_help or args.shell_completion or args.info or args.config_path:
        return None
    for override in args.overrides:
        key, _, value = override.partition("=")
        if key in ("hydra.run.dir", "hydra.sweep.dir"):
            check_run_dir(value, key)
    new_sweep_dir = args.multirun and not args.cfg and not any(o.startswith("hydra.sweep.dir=") for o in args.overrides)
    cfg, sweep_dir = compose_for_start(args.overrides, args.config_dir, bool(new_sweep_dir))
    if not args.cfg:  # --cfg prints the config: no network, no files needed
        # the network builds for these images; weights exist, load and fit it (launch's check, which every
        # launcher makes before spawning, finds this one passed and does not build it again)
        check_network(OmegaConf.to_container(cfg, resolve=True))
    return sweep_dir


def torchrun_main(argv, slurm_tasks: bool = False) -> None:
    """Every torchrun rank (or SLURM task) composes the same config; rank 0 chooses the run dir and
    broadcasts it."""
    args = _parse(argv)
    if args.multirun:
        raise ConfigError("-m/--multirun cannot run under torchrun: every rank would run the whole sweep; "
                          "run the sweep with lgm-gcp-train -m ... trainer.devices=N instead")
    overrides = [o for o in args.overrides if not o.startswith("hydra.")]
    run_dirs = [o.split("=", 1)[1] for o in args.overrides if o.startswith("hydra.run.dir=")]
    cfg, choices = compose_with_choices(overrides)
    if slurm_tasks:
        slurm.check_one_device_per_task(cfg.trainer.devices, f"{os.environ['WORLD_SIZE']} SLURM tasks")
    env = distributed.setup(cfg.trainer.accelerator)
    run_dir = run_dirs[-1] if run_dirs else None
    if run_dir is None and env.is_main:
        run_dir = unique_dir(time.strftime("outputs/%Y-%m-%d/%H-%M-%S"))
    run_dir = distributed.broadcast_object(run_dir)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    setup_worker_logging(Path(run_dir), env.rank)
    launch(OmegaConf.to_container(cfg, resolve=True), run_dir, overrides, choices)


def register_slurm_launcher() -> None:
    """Hydra finds launchers by scanning ``hydra_plugins``, which misses an editable install's copy of
    ours (hydra_plugins/lgm_gcp_slurm); registering it by hand works for every kind of install."""
    try:
        from hydra_plugins.lgm_gcp_slurm.launcher import SlurmLauncher
    except ImportError:  # without the [sweep] extra: hydra/launcher=slurm then names the missing plugin
        return
    from hydra.core.plugins import Plugins

    Plugins.instance().register(SlurmLauncher)


def cli() -> None:
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    argv = sys.argv[1:]
    try:
        slurm_tasks = slurm.export_task_ranks()  # srun -n N: one rank per SLURM task, as under torchrun
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            torchrun_main(argv, slurm_tasks)
            return
        sweep_dir = preflight(argv)
    except ConfigError as e:
        fail(PROG, e, status=2)
    except UserError as e:
        fail(PROG, e)
    args = _parse(argv)
    if args.multirun:  # Hydra's main() reads sys.argv
        register_slurm_launcher()
        overrides = sweep_safe(args.overrides)
        if sweep_dir:  # one folder per sweep
            overrides.append(f"hydra.sweep.dir={sweep_dir}")
        sys.argv[1:] = [a for a in argv if a not in args.overrides] + overrides
    try:
        main()
    except (SystemExit, Exception):
        for sweep_dir in SWEEP_DIRS:  # a failed sweep: say which jobs failed (if any job ran)
            if (Path(sweep_dir) / "jobs.jsonl").is_file():
                print(summary(sweep_dir), file=sys.stderr)
        raise


EVAL_USAGE = """usage: lgm-gcp-eval FILE [overrides ...]

Evaluate the weights in FILE (a released checkpoint of GCP_Optimization, 3G-Net, fast-MPN-COV or
LargeMarginInSoftmax, a torchvision model, or an lgm-gcp checkpoint) with the composed config's evaluation
protocol, without training: the same run as lgm-gcp-train weights=FILE eval.only=true [overrides ...].
The overrides compose exactly as for lgm-gcp-train, e.g.

  lgm-gcp-eval ResNet50_GCP_LRnorm.pth.tar experiment=gcp_resnet50_gcp_norm dataset.root=/data/imagenet

The run folder's metrics.json holds the result; lgm-gcp-table shows it in the "released" column."""


def eval_cli() -> None:
    global PROG
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(EVAL_USAGE, file=sys.stdout if argv else sys.stderr)
        raise SystemExit(0 if argv else 2)
    path = Path(argv[0])
    if "=" in argv[0] or argv[0].startswith("-"):
        fail("lgm-gcp-eval", f"the first argument must be the weights file, got {argv[0]!r} (see lgm-gcp-eval "
             "--help)", status=2)
    if not path.is_file():
        fail("lgm-gcp-eval", f"weights file {path} does not exist", status=2)
    PROG = "lgm-gcp-eval"
    quoted = str(path.resolve()).replace("\\", "\\\\").replace("'", "\\'")
    sys.argv = [sys.argv[0], f"weights='{quoted}'", "eval.only=true", *argv[1:]]
    try:
        cli()
    finally:
        PROG = "lgm-gcp-train"


if __name__ == "__main__":
    cli()
