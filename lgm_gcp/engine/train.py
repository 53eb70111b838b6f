"""The training run, in call order: ``run`` (seed -> data -> model -> optimizer + schedule -> resume) ->
``fit`` (epochs) -> ``train_one_epoch`` -> ``backward_and_step``; then ``evaluate``, ``save_checkpoint``,
``resume`` and the small helpers they use.

``run(cfg, run_dir)`` is what every worker executes (one process, each spawned DDP rank, or each
torchrun rank); ``cfg`` is the resolved config as plain dicts, validated at start-up
(``lgm_gcp/config/validate.py``); the trainer reads its own groups typed (``TrainerConfig``,
``EvalConfig``) and the dataset through ``TrainingData``. Only rank 0 writes to ``run_dir``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from lgm_gcp.assemble import build_network
from lgm_gcp.config.schema import EvalConfig, TrainerConfig
from lgm_gcp.data import TrainingData
from lgm_gcp.engine import checkpoint, distributed
from lgm_gcp.engine.ema import ModelEma
from lgm_gcp.engine.landscape import probe_hook
from lgm_gcp.engine.record import append_environment
from lgm_gcp.engine.runlock import RunLock
from lgm_gcp.engine.runlog import RunLogger, progress
from lgm_gcp.engine.signals import Preemption
from lgm_gcp.engine.state import EPOCH_SUMS, EVAL_SUMS, Sums, TrainState
from lgm_gcp.errors import CheckpointError, NonFiniteError
from lgm_gcp.loggers.trackers import start_trackers
from lgm_gcp.optim import build_schedule, set_lr
from lgm_gcp.options.instantiate import instantiate

log = logging.getLogger("lgm_gcp")
AMP_DTYPES = {False: None, "bf16": torch.bfloat16, "fp16": torch.float16}  # trainer.amp's choices


@dataclass
class Session:
    """Everything one worker's run holds; ``state`` is what a checkpoint restores."""

    cfg: Mapping[str, Any]  # the resolved config, as the checkpoint records it
    trainer: TrainerConfig
    eval: EvalConfig
    env: distributed.DistEnv
    data: TrainingData
    model: torch.nn.Module  # possibly compiled and DDP-wrapped
    optimizer: torch.optim.Optimizer
    schedule: Any
    scaler: torch.amp.GradScaler | None
    ema: ModelEma | None
    logger: RunLogger
    state: TrainState
    preemption: Preemption
    saved: str = "no checkpoint yet"  # where the last good weights are, for the non-finite message
    landscape: Any = None  # the loss-landscape probe (trainer.landscape_every), rank 0

    def autocast(self):
        dtype = AMP_DTYPES[self.trainer.amp]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.env.device.type, dtype=dtype)

    def memory_format(self, images: torch.Tensor) -> torch.Tensor:
        if self.trainer.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images


def run(cfg: Mapping[str, Any], run_dir: str | Path, overrides=None, choices=None) -> dict:
    """Train and evaluate one configuration; returns the metrics.json summary."""
    run_dir = Path(run_dir)
    tcfg, ecfg = typed(TrainerConfig, cfg["trainer"]), typed(EvalConfig, cfg["eval"])
    env = distributed.setup(tcfg.accelerator)
    preemption = Preemption()
    try:
        with RunLock(run_dir, enabled=env.is_main):  # one writer per run folder, for the run's lifetime
            seed_everything(cfg["seed"] + env.rank, tcfg.deterministic)
            data = instantiate(cfg["dataset"], ten_crop=ecfg.ten_crop, mirror=ecfg.mirror,
                               num_workers=tcfg.num_workers, prefetch_factor=tcfg.prefetch_factor)
            model, weights = build_network(cfg, data.num_classes, data.in_channels)
            model = model.to(env.device)
            if tcfg.channels_last:
                model = model.to(memory_format=torch.channels_last)
            schedule = build_schedule(cfg["lr_policy"], cfg["optimizer"])
            optimizer = instantiate(cfg["optimizer"])(model, lr=schedule.base_lr)
            scaler = torch.amp.GradScaler(env.device.type) if tcfg.amp == "fp16" else None
            ema = ModelEma(model, tcfg.ema_decay) if tcfg.ema_decay else None
            state, loaded_from = TrainState(), "no checkpoint yet"
            history, extra = [], {"num_parameters": sum(p.numel() for p in model.parameters()),
                                  "world_size": env.world_size}
            if weights:
                extra["weights"] = {k: v for k, v in weights.items() if k != "summary"}
                if env.is_main and "summary" in weights:
                    log.info(weights["summary"])

            resumed = None if ecfg.only else resume(run_dir, cfg, tcfg, env, model, optimizer, scaler, ema)
            if resumed is not None:
                state, history, extra["wall_time_s"], loaded_from = resumed
            landscape = probe_hook(tcfg)
            if landscape is not None:  # metrics.json lists the probes (the same list the checkpoint keeps)
                extra["landscape"] = state.landscape
            hparams = {**(choices or {}), "seed": cfg["seed"], "batch_size": tcfg.batch_size,
                       "max_epochs": tcfg.max_epochs}
            trackers = start_trackers(cfg["logger"], run_dir, cfg, hparams) if env.is_main else []
            logger = RunLogger(run_dir, env.is_main, history, extra, trackers)
            status = "failed"
            try:
                if env.is_main:  # only now: a run that fails to start never overwrites an earlier run's files
                    write_run_files(run_dir, cfg, overrides, choices)
                    append_environment(run_dir, env.world_size)
                model = wrap_model(model, env, tcfg)
                with preemption:
                    s = Session(cfg, tcfg, ecfg, env, data, model, optimizer, schedule, scaler, ema, logger, state,
                                preemption, saved=loaded_from, landscape=landscape)
                    status = evaluate_only(s) if ecfg.only else fit(s)
                    if status == "preempted":  # the launcher hands this signal on (signals.end_preempted)
                        logger.extra["preempted_by"] = preemption.signame
                    if env.distributed:
                        logger.extra["replica_checksums"], logger.extra["rank_steps"] = replica_states(
                            model, env, state.step)
            finally:
                logger.close(status)
            summary = logger.summary(status)
        return summary
    finally:
        distributed.teardown(clean=sys.exc_info()[0] is None)


def schedule_done(tcfg: TrainerConfig, state: TrainState) -> str | None:
    """Which budget is spent (``"max_epochs"`` or ``"max_steps"``), or None while training remains."""
    if state.epoch >= tcfg.max_epochs:
        return "max_epochs"
    if tcfg.max_steps is not None and state.step >= tcfg.max_steps:
        return "max_steps"
    return None


def fit(s: Session) -> str:
    """Epochs until ``max_epochs`` or ``max_steps`` (status ``finished``) or a preemption signal
    (``preempted``). A rerun of a finished run trains nothing and keeps its metrics."""
    tcfg, state = s.trainer, s.state
    if s.env.is_main:  # trainer.batch_size is the global batch: say how it is split
        batch, n = tcfg.batch_size, s.env.world_size
        log.info("global batch %d = %d process%s x %d on %s, %d steps an epoch", batch, n, "es" if n > 1 else "",
                 batch // n, s.env.device, s.data.steps_per_epoch(batch, n))
    if schedule_done(tcfg, state):
        s.logger.extra["ended_by"] = schedule_done(tcfg, state)
        log.info("nothing to train: the run reached %s at step %d", s.logger.extra["ended_by"], state.step)
        return "finished"
    # an epoch cut short by max_steps or a signal is trained to its end now: its record is redone
    s.logger.history = [r for r in s.logger.history if not r.get("partial")]
    while state.epoch < tcfg.max_epochs:
        epoch = state.epoch
        record = {"epoch": epoch, **train_one_epoch(s)}
        preempted = s.preemption.requested(s.env.device, s.env.distributed)  # collective: every rank asks
        stopped = tcfg.max_steps is not None and state.step >= tcfg.max_steps
        finished_epoch = state.step_in_epoch >= s.data.steps_per_epoch(tcfg.batch_size, s.env.world_size)
        if preempted and not finished_epoch:
            save_checkpoint(s)
            log.warning("preempted at step %d: checkpoint written; rerun the same command to resume", state.step)
            return "preempted"
        if (epoch + 1) % tcfg.eval_every == 0 or epoch + 1 == tcfg.max_epochs or stopped:
            record.update(evaluate(s, s.model))
            if s.data.has_val:
                record.update(evaluate(s, s.model, prefix="val", split="val"))
            if s.ema is not None:
                record.update(evaluate(s, s.ema.module, prefix="ema_test"))
        if finished_epoch:
            state.epoch, state.step_in_epoch = epoch + 1, 0
        else:
            record["partial"] = True  # stopped inside the epoch: a rerun continues from this step
        chosen_by = "val_top1" if "val_top1" in record else "test_top1"  # the test set only without a val split
        is_best = chosen_by in record and (state.best is None or record[chosen_by] > state.best)
        if is_best:
            state.best = record[chosen_by]
        if s.env.is_main:
            s.logger.epoch(record, state.step)
            log.info("epoch %d  " + "  ".join(f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float)), epoch)
        save_checkpoint(s)
        if is_best and s.env.is_main:
            ckpts = s.logger.run_dir / "checkpoints"
            checkpoint.link_or_copy(ckpts / "last.pt", ckpts / "best.pt")
        if preempted:
            return "preempted"
        if stopped:
            break
    s.logger.extra["ended_by"] = schedule_done(tcfg, state)
    return "finished"


def evaluate_only(s: Session) -> str:
    """lgm-gcp-eval (``eval.only``): the loaded weights under the preset's evaluation protocol, one
    record, nothing trained; the same set-up as a training run (data, network, devices, trackers)."""
    record = {"epoch": 0, **evaluate(s, s.model)}
    if s.env.is_main:
        s.logger.epoch(record, 0)
        log.info("evaluated %s: " + "  ".join(f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float)),
                 s.cfg["weights"])
    return "evaluated"


def train_one_epoch(s: Session) -> dict:
    """One pass over the training set (from ``step_in_epoch`` on); returns the epoch's mean loss,
    top-1/top-5 (%), throughput and the criterion's last logs (e.g. the L-GM margin)."""
    tcfg, state = s.trainer, s.state
    s.model.train()
    spe = s.data.steps_per_epoch(tcfg.batch_size, s.env.world_size)
    skip = state.step_in_epoch
    # a resumed epoch continues the sums its checkpoint holds (rank 0 holds the all-reduced sums), so
    # its record equals an uninterrupted epoch's
    totals = Sums(EPOCH_SUMS, s.env.device, state.epoch_sums if skip and s.env.is_main else None)
    bad_images = len(s.data.skipped_images or [])
    # the record's lr and criterion logs are its last step's: a resumed epoch starts from the checkpoint's
    # step (its lr recomputed: the schedule is a function of the step) and logs
    lr = s.schedule(state.step - 1 if skip else state.step, spe)
    start, logs = time.time() - totals["seconds"], dict(state.epoch_logs or {}) if skip else {}
    state.epoch_totals, state.epoch_start = totals, start
    batches = s.data.train_batches(tcfg.batch_size, seed=s.cfg["seed"], epoch=state.epoch, rank=s.env.rank,
                                   world_size=s.env.world_size, device=s.env.device, skip=skip)
    for images, targets in progress(batches, spe - skip, f"epoch {state.epoch}", tcfg.progress and s.env.is_main):
        step = state.step
        lr = s.schedule(step, spe)
        set_lr(s.optimizer, lr)
        if s.landscape is not None and s.env.is_main:  # this step's weights and batch, before its update
            found = s.landscape(checkpoint.unwrap(s.model), s.memory_format(images), targets, step)
            if found:
                state.landscape.append(found)
                s.logger.scalars("landscape", {k: v for k, v in found.items() if k != "step"}, step)
        with s.autocast():
            loss, logits, logs = s.model(s.memory_format(images), targets, step)
        global_n = min(tcfg.batch_size, s.data.num_train_images - state.step_in_epoch * tcfg.batch_size)
        scale = ddp_loss_scale(targets.numel(), global_n, s.env.world_size)
        stepped = backward_and_step(s, loss * scale if scale != 1.0 else loss)
        state.step += 1
        state.step_in_epoch += 1
        state.epoch_logs = logs
        with torch.no_grad():
            top1, top5 = topk_correct(logits.detach(), targets)
            n = targets.numel()
            if stepped:
                totals.add(loss=loss.detach().double() * n, top1=top1, top5=top5, images=n)
            else:
                totals.add(top1=top1, top5=top5, images=n, skipped_steps=1, skipped_images=n)
        if s.env.is_main and step % tcfg.log_every == 0:
            s.logger.scalars("train", {"loss": loss.item(), "lr": lr, **{k: float(v) for k, v in logs.items()}}, step)
        if tcfg.checkpoint_every and state.step % tcfg.checkpoint_every == 0:
            save_checkpoint(s)
        if s.preemption.requested(s.env.device, s.env.distributed, state.step) or (
                tcfg.max_steps is not None and state.step >= tcfg.max_steps):
            break
    totals = totals.all_reduced()  # state.epoch_totals keeps this rank's own sums for a mid-epoch checkpoint
    seconds = time.time() - start
    n = max(totals["images"], 1.0)
    record = {"train_loss": totals["loss"] / max(n - totals["skipped_images"], 1.0),
              "train_top1": 100 * totals["top1"] / n, "train_top5": 100 * totals["top5"] / n, "lr": lr,
              "train_images": int(totals["images"]), "skipped_steps": int(totals["skipped_steps"]),
              "train_time_s": seconds, "images_per_s": totals["images"] / seconds if seconds else 0.0,
              **{k: float(v) for k, v in logs.items()}}
    if s.data.skipped_images is not None:  # image folders with dataset.skip_bad_images (this rank's count)
        record["skipped_images"] = len(s.data.skipped_images) - bad_images
    return record


def backward_and_step(s: Session, loss: torch.Tensor) -> bool:
    """Backward, optional clipping, the non-finite guard (loss and gradients, one host sync), the
    optimizer step and the EMA update. Returns False when a non-finite step was skipped
    (``trainer.skip_nonfinite``); otherwise a non-finite loss or gradient stops the run with a
    message naming the step and the loss or the first non-finite parameter."""
    s.optimizer.zero_grad(set_to_none=True)
    clip = s.trainer.grad_clip
    if s.scaler is not None:  # fp16: the scaler itself skips steps whose gradients overflowed
        s.scaler.scale(loss).backward()
        if clip:
            s.scaler.unscale_(s.optimizer)
            torch.nn.utils.clip_grad_norm_(s.model.parameters(), clip)
        finite = bool(torch.isfinite(loss.detach()))
    else:
        loss.backward()
        params = [p for p in s.model.parameters() if p.grad is not None]
        norm = (torch.nn.utils.clip_grad_norm_(params, clip) if clip
                else torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in params]))))
        finite = bool(torch.isfinite(loss.detach() + norm))
    if not finite:
        where = (f"loss {loss.item()}" if not torch.isfinite(loss.detach())
                 else f"gradient in parameter '{first_nonfinite_gradient(s.model)}'")
        if s.trainer.skip_nonfinite:
            log.warning("step %d: non-finite %s; step skipped", s.state.step, where)
            s.optimizer.zero_grad(set_to_none=True)
            return False
        raise NonFiniteError(f"non-finite {where} at step {s.state.step} (epoch {s.state.epoch}); the last "
                             f"finite weights are in {s.saved} (trainer.skip_nonfinite=true skips such steps)")
    if s.scaler is not None:
        s.scaler.step(s.optimizer)
        s.scaler.update()
    else:
        s.optimizer.step()
    if s.ema is not None:
        s.ema.update(checkpoint.unwrap(s.model))
    return True


def ddp_loss_scale(local_n: int, global_n: int, world_size: int) -> float:
    """DDP averages the ranks' gradients; a rank holding local_n of a global batch of global_n images
    scales its mean loss by local_n · world_size / global_n, so the average equals the gradient of the
    global batch's mean loss even when a last partial batch splits unevenly (1 for equal shares)."""
    return local_n * world_size / global_n


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> list:
    k = min(max(ks), logits.shape[1])
    hit = logits.topk(k, dim=1).indices.eq(targets[:, None])
    return [hit[:, : min(kk, k)].any(dim=1).sum() for kk in ks]


def first_nonfinite_gradient(model: torch.nn.Module) -> str | None:
    for name, p in checkpoint.unwrap(model).named_parameters():
        if p.grad is not None and not torch.isfinite(p.grad).all():
            return name
    return None


@torch.inference_mode()
def evaluate(s: Session, model: torch.nn.Module, prefix: str = "test", split: str = "test") -> dict:
    """Loss (plain CE of the margin-free prediction logits, comparable across losses), top-1 and
    top-5 (%). Ten-crop batches (B, crops, C, H, W) average the softmax probabilities, or the logits
    with ``eval.ten_crop_average=logits`` (3G-Net's Places365 evaluation). Every test image counts
    exactly once across ranks. ``split="val"``: the held-out validation images (``dataset.val_fraction``)."""
    tcfg = s.trainer
    model.eval()
    bs = tcfg.eval_batch_size or max(tcfg.batch_size // s.env.world_size, 1)
    totals = Sums(EVAL_SUMS, s.env.device)
    where = {"split": split} if split != "test" else {}  # image-folder data has no held-out split
    batches = s.data.test_batches(bs, rank=s.env.rank, world_size=s.env.world_size, device=s.env.device, **where)
    for images, targets in progress(batches, s.data.num_test_batches(bs, s.env.world_size, **where), prefix,
                                    tcfg.progress and s.env.is_main):
        with s.autocast():
            if images.dim() == 5:
                logits = ten_crop_logits(model(s.memory_format(images.flatten(0, 1))).float(), images.shape[1],
                                         s.eval.ten_crop_average)
            else:
                logits = model(s.memory_format(images)).float()
        loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
        top1, top5 = topk_correct(logits, targets)
        totals.add(loss=loss.double(), top1=top1, top5=top5, images=targets.numel())
    totals = totals.all_reduced()
    n = max(totals["images"], 1.0)
    return {f"{prefix}_loss": totals["loss"] / n, f"{prefix}_top1": 100 * totals["top1"] / n,
            f"{prefix}_top5": 100 * totals["top5"] / n, f"{prefix}_images": int(totals["images"])}


def ten_crop_logits(crop_logits: torch.Tensor, crops: int, average: str) -> torch.Tensor:
    """(B·crops, K) -> (B, K): the mean of the crops' logits, or the log of the mean of their softmax."""
    return TEN_CROP_AVERAGES[average](crop_logits.view(-1, crops, crop_logits.shape[1]))


TEN_CROP_AVERAGES = {  # eval.ten_crop_average: (B, crops, K) -> (B, K)
    "logits": lambda per_image: per_image.mean(1),
    "softmax": lambda per_image: per_image.softmax(2).mean(1).clamp_min(1e-12).log(),
}


def save_checkpoint(s: Session) -> None:
    """``checkpoints/last.pt`` (the previous one kept as ``last-prev.pt``), rank 0, then a barrier.
    Mid-epoch, the epoch's running sums of every rank go in too (one all-reduce, every rank)."""
    state = s.state
    state.epoch_sums = None
    if not state.step_in_epoch:
        state.epoch_logs = None
    elif state.epoch_logs:  # floats, not the criterion's tensors (one host sync per checkpoint)
        state.epoch_logs = {k: float(v) for k, v in state.epoch_logs.items()}
    if state.epoch_totals is not None and state.step_in_epoch:
        state.epoch_totals.set("seconds", time.time() - state.epoch_start if s.env.is_main else 0.0)  # so far
        state.epoch_sums = state.epoch_totals.all_reduced().tolist()
    if s.env.is_main:
        payload = {
            "model": checkpoint.unwrap(s.model).state_dict(), "optimizer": s.optimizer.state_dict(),
            **s.state.state_dict(),
            "history": s.logger.history, "wall_time_s": time.time() - s.logger.start, "config": dict(s.cfg),
            "world_size": s.env.world_size, "rng": checkpoint.rng_state(),
            "scaler": s.scaler.state_dict() if s.scaler is not None else None,
            "ema": s.ema.state_dict() if s.ema is not None else None,
        }
        checkpoint.save(s.logger.run_dir / "checkpoints" / "last.pt", payload, keep_previous=True)
    s.saved = f"{s.logger.run_dir / 'checkpoints' / 'last.pt'} (step {s.state.step})"
    distributed.barrier()


def resume(run_dir: Path, cfg: Mapping[str, Any], tcfg: TrainerConfig, env, model, optimizer, scaler, ema) -> tuple:
    """Restore from ``trainer.resume`` or ``<run dir>/checkpoints/last.pt`` (falling back to
    ``last-prev.pt`` if that one is corrupt). Returns (state, history, wall time, where it loaded from) or None."""
    last = run_dir / "checkpoints" / "last.pt"
    if env.is_main:
        checkpoint.remove_stale_temporaries(last.parent)
    if tcfg.resume:
        path = Path(tcfg.resume)
        payload = checkpoint.load(path)
    elif tcfg.auto_resume and (last.is_file() or checkpoint.previous_of(last).is_file()):
        payload, path = checkpoint.load_latest(last, log if env.is_main else None)
    else:
        return None
    if not tcfg.force_resume:
        checkpoint.check_compatible(payload, cfg, env.world_size, path)
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:  # force_resume across an architecture change
        text = " ".join(str(e).split()).split("for Network: ", 1)[-1]
        first = text if len(text) <= 200 else text[:200] + "..."
        raise CheckpointError(f"cannot resume from {path}: its weights do not fit this network ({first}); "
                              "use a new run dir") from e
    if scaler is not None and payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    if ema is not None and payload.get("ema"):
        ema.load_state_dict(payload["ema"])
    checkpoint.set_rng_state(payload["rng"])
    if env.is_main:
        log.info("resumed from %s at epoch %d, step %d", path, payload["epoch"], payload["step"])
    loaded_from = f"{path} (step {payload['step']})"
    return TrainState.from_checkpoint(payload), list(payload.get("history", [])), payload.get("wall_time_s", 0.0), \
        loaded_from


def wrap_model(model: torch.nn.Module, env, tcfg: TrainerConfig) -> torch.nn.Module:
    """SyncBatchNorm (DDP + ``sync_bn``), ``torch.compile`` and DDP, in that order."""
    if env.distributed and tcfg.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if tcfg.compile:
        model = torch.compile(model, **({"backend": tcfg.compile} if isinstance(tcfg.compile, str) else {}))
    if env.distributed:
        ids = [env.device.index] if env.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model


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


def replica_states(model, env, step: int) -> tuple:
    """Every rank's sum of its parameters (float64) and its global step: equal when the replicas
    are in sync and stopped together."""
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    local = torch.stack([checksum, checksum.new_tensor(float(step))]).to(env.device)
    gathered = [torch.zeros_like(local) for _ in range(env.world_size)]
    torch.distributed.all_gather(gathered, local)
    return [g[0].item() for g in gathered], [int(g[1].item()) for g in gathered]


def typed(schema: type, values: Mapping[str, Any]):
    """A group's resolved values as its schema's dataclass (keys added with trainer.allow_extra are left out)."""
    names = {f.name for f in dataclasses.fields(schema)}
    return schema(**{k: v for k, v in values.items() if k in names})


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
