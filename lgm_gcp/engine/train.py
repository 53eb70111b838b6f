"""The training run, top to bottom: seed -> data -> model -> optimizer + schedule -> resume -> fit.

``run(cfg, run_dir)`` is what every worker executes (one process, each spawned DDP rank, or each
torchrun rank); ``cfg`` is the resolved config as plain dicts. Only rank 0 writes to ``run_dir``.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from lgm_gcp.config.instantiate import instantiate

from lgm_gcp.engine import checkpoint, distributed
from lgm_gcp.engine.logging import RunLogger, progress
from lgm_gcp.models.build import build_model
from lgm_gcp.optim import set_lr

log = logging.getLogger("lgm_gcp")


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> list:
    k = min(max(ks), logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hit = top.eq(targets[:, None])
    return [hit[:, : min(kk, k)].any(dim=1).sum() for kk in ks]


def train_one_epoch(model, optimizer, data, schedule, state: dict, cfg: Mapping, env, logger: RunLogger) -> dict:
    """One pass over the training set; returns the epoch's mean loss, top-1/top-5 (%) and throughput."""
    tcfg = cfg["trainer"]
    model.train()
    spe = data.steps_per_epoch(tcfg["batch_size"])
    skip = state["step_in_epoch"]
    totals = torch.zeros(4, dtype=torch.float64, device=env.device)  # loss*n, top1, top5, n
    start, logs = time.time(), {}
    batches = data.train_batches(tcfg["batch_size"], seed=cfg["seed"], epoch=state["epoch"], rank=env.rank,
                                 world_size=env.world_size, device=env.device, skip=skip)
    for images, targets in progress(batches, spe - skip, f"epoch {state['epoch']}", tcfg["progress"] and env.is_main):
        step = state["step"]
        lr = schedule(step, spe)
        set_lr(optimizer, lr)
        loss, logits, logs = model(images, targets, step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {step} (epoch {state['epoch']}); "
                                     "the last good checkpoint is kept")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state["step"] += 1
        state["step_in_epoch"] += 1
        with torch.no_grad():
            top1, top5 = topk_correct(logits.detach(), targets)
            n = targets.numel()
            totals += torch.stack([loss.detach().double() * n, top1.double(), top5.double(), totals.new_tensor(n)])
        if env.is_main and step % tcfg["log_every"] == 0:
            logger.scalars("train", {"loss": loss.item(), "lr": lr, **{k: float(v) for k, v in logs.items()}}, step)
        if tcfg["checkpoint_every"] and state["step"] % tcfg["checkpoint_every"] == 0:
            save_checkpoint(model, optimizer, state, cfg, env, logger, "last")
        if tcfg["max_steps"] is not None and state["step"] >= tcfg["max_steps"]:
            break
    distributed.all_reduce_sum(totals)
    seconds = time.time() - start
    n = max(totals[3].item(), 1.0)
    return {"train_loss": totals[0].item() / n, "train_top1": 100 * totals[1].item() / n,
            "train_top5": 100 * totals[2].item() / n, "lr": lr if spe > skip else schedule(state["step"], spe),
            "train_images": int(totals[3].item()), "train_time_s": seconds,
            "images_per_s": totals[3].item() / seconds if seconds else 0.0,
            **{k: float(v) for k, v in logs.items()}}


@torch.inference_mode()
def evaluate(model, data, cfg: Mapping, env) -> dict:
    """Test loss (plain CE of the margin-free prediction logits, comparable across losses), top-1 and
    top-5 (%). Every test image counts exactly once across ranks."""
    tcfg = cfg["trainer"]
    model.eval()
    bs = tcfg["eval_batch_size"] or max(tcfg["batch_size"] // env.world_size, 1)
    totals = torch.zeros(4, dtype=torch.float64, device=env.device)
    batches = data.test_batches(bs, rank=env.rank, world_size=env.world_size, device=env.device)
    for images, targets in progress(batches, data.num_test_batches(bs, env.world_size), "eval",
                                    tcfg["progress"] and env.is_main):
        if images.dim() == 5:  # (B, crops, C, H, W): average the softmax over the crops
            b, n = images.shape[:2]
            probs = model(images.flatten(0, 1)).float().softmax(1).view(b, n, -1).mean(1)
            logits = probs.clamp_min(1e-12).log()
        else:
            logits = model(images)
        loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
        top1, top5 = topk_correct(logits, targets)
        totals += torch.stack([loss.double(), top1.double(), top5.double(), totals.new_tensor(targets.numel())])
    distributed.all_reduce_sum(totals)
    n = max(totals[3].item(), 1.0)
    return {"test_loss": totals[0].item() / n, "test_top1": 100 * totals[1].item() / n,
            "test_top5": 100 * totals[2].item() / n, "test_images": int(totals[3].item())}


def save_checkpoint(model, optimizer, state, cfg, env, logger: RunLogger, name: str) -> None:
    if env.is_main:
        payload = {
            "model": checkpoint.unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
            "epoch": state["epoch"], "step": state["step"], "step_in_epoch": state["step_in_epoch"],
            "best": state["best"], "history": logger.history, "wall_time_s": time.time() - logger.start,
            "config": dict(cfg), "world_size": env.world_size, "rng": checkpoint.rng_state(),
        }
        checkpoint.save(logger.run_dir / "checkpoints" / f"{name}.pt", payload)
    distributed.barrier()


def replica_checksums(model, env) -> list:
    """Every rank's sum of its parameters (float64): equal when the replicas are in sync."""
    local = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().to(env.device)
    gathered = [torch.zeros_like(local) for _ in range(env.world_size)]
    torch.distributed.all_gather(gathered, local)
    return [g.item() for g in gathered]


def resume_path(run_dir: Path, tcfg: Mapping[str, Any]) -> Path | None:
    if tcfg["resume"]:
        return Path(tcfg["resume"])
    last = run_dir / "checkpoints" / "last.pt"
    return last if tcfg["auto_resume"] and last.is_file() else None


def write_run_files(run_dir: Path, cfg: Mapping[str, Any], overrides, choices) -> None:
    """The resolved config, the command-line overrides and the config-group choices
    (``backbone: resnet50``, ...), for people and for lgm-gcp-table."""
    import yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(dict(cfg), sort_keys=False))
    if overrides is not None:
        (run_dir / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    if choices is not None:
        (run_dir / "choices.yaml").write_text(yaml.safe_dump(dict(choices), sort_keys=False))


def run(cfg: Mapping[str, Any], run_dir: str | Path, overrides=None, choices=None) -> dict:
    """Train and evaluate one configuration; returns the metrics.json summary."""
    run_dir = Path(run_dir)
    tcfg = cfg["trainer"]
    env = distributed.setup(tcfg["accelerator"])
    try:
        seed_everything(cfg["seed"] + env.rank, tcfg["deterministic"])

        data = instantiate(cfg["dataset"], ten_crop=cfg["eval"]["ten_crop"], num_workers=tcfg["num_workers"])
        model = build_model(cfg, data.num_classes, data.in_channels).to(env.device)
        schedule = instantiate(cfg["lr_policy"])
        optimizer = instantiate(cfg["optimizer"])(model, lr=schedule.base_lr)
        state = {"epoch": 0, "step": 0, "step_in_epoch": 0, "best": None}
        history, extra = [], {"num_parameters": sum(p.numel() for p in model.parameters()),
                              "world_size": env.world_size}

        path = resume_path(run_dir, tcfg)
        if path is not None:
            payload = checkpoint.load(path)
            if not tcfg["force_resume"]:
                checkpoint.check_compatible(payload, cfg, env.world_size, path)
            model.load_state_dict(payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
            state = {k: payload[k] for k in ("epoch", "step", "step_in_epoch", "best")}
            history = [r for r in payload.get("history", []) if not r.get("partial")]
            extra["wall_time_s"] = payload.get("wall_time_s", 0.0)
            checkpoint.set_rng_state(payload["rng"])
            if env.is_main:
                log.info("resumed from %s at epoch %d, step %d", path, state["epoch"], state["step"])

        if env.is_main:  # only now: a run that fails to start never overwrites an earlier run's files
            write_run_files(run_dir, cfg, overrides, choices)

        if env.distributed:
            if tcfg["sync_bn"]:
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            ids = [env.device.index] if env.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

        logger = RunLogger(run_dir, env.is_main, history, extra)
        status = "failed"
        try:
            status = fit(model, optimizer, data, schedule, state, cfg, env, logger)
            if env.distributed:
                logger.extra["replica_checksums"] = replica_checksums(model, env)
        finally:
            logger.close(status)
        return logger.summary(status)
    finally:
        distributed.teardown(clean=sys.exc_info()[0] is None)


def fit(model, optimizer, data, schedule, state, cfg, env, logger: RunLogger) -> str:
    tcfg = cfg["trainer"]
    while state["epoch"] < tcfg["max_epochs"]:
        epoch = state["epoch"]
        record = {"epoch": epoch, **train_one_epoch(model, optimizer, data, schedule, state, cfg, env, logger)}
        stopped = tcfg["max_steps"] is not None and state["step"] >= tcfg["max_steps"]
        last_epoch = epoch + 1 == tcfg["max_epochs"] or stopped
        if (epoch + 1) % tcfg["eval_every"] == 0 or last_epoch:
            record.update(evaluate(model, data, cfg, env))
        if stopped and state["step_in_epoch"] < data.steps_per_epoch(tcfg["batch_size"]):
            record["partial"] = True  # stopped inside the epoch: a rerun continues from this step
        else:
            state["epoch"], state["step_in_epoch"] = epoch + 1, 0
        is_best = "test_top1" in record and (state["best"] is None or record["test_top1"] > state["best"])
        if is_best:
            state["best"] = record["test_top1"]
        if env.is_main:
            logger.epoch(record, state["step"])
            log.info("epoch %d  " + "  ".join(f"{k} {v:.4g}" for k, v in record.items()
                                                if isinstance(v, float)), epoch)
        save_checkpoint(model, optimizer, state, cfg, env, logger, "last")
        if is_best and env.is_main:
            checkpoint.link_or_copy(logger.run_dir / "checkpoints" / "last.pt", logger.run_dir / "checkpoints" / "best.pt")
        if stopped:
            return "stopped"
    return "finished"
