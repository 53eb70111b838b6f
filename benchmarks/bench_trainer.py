"""Trainer overhead and head throughput, in one process.

1. The framework's training epoch (``run`` with its in-memory data path, LR schedule, non-finite
   guard, logging) against a bare PyTorch loop written here: the same model (built by lgm_gcp),
   the same SGD, the same number of steps, data already in memory and normalised. Prints
   framework / bare (goal <= 1.05).
2. Training images/s (fwd + bwd + step) of GAP, GCP and 3G heads on small_cnn with 28×28 grey inputs
   (batch 64) and ResNet-50 on 224² images, and each covariance head's images/s over GAP's,
   with optional bf16 autocast, channels_last and torch.compile (for GPUs), plus TFLOP/s from the
   model's FLOPs (torch.utils.flop_counter).

    python benchmarks/bench_trainer.py [--device cuda --amp bf16 --channels-last --compile] [--batch 64]
                                       [--networks small_cnn resnet50] [--skip-overhead]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time

import torch
from omegaconf import OmegaConf

from lgm_gcp.config.compose import compose
from lgm_gcp.engine.train import run
from lgm_gcp.models.build import build_model
from lgm_gcp.optim import sgd

OVERHEAD = ["dataset=synthetic", "dataset.train_size=4096", "dataset.test_size=64", "backbone=resnet20",
            "trainer.batch_size=128", "trainer.max_epochs=1", "trainer.progress=false", "trainer.log_every=50"]


def resolved(*overrides) -> dict:
    return OmegaConf.to_container(compose(list(overrides)), resolve=True)


def bare_loop(cfg, steps: int, device: str) -> float:
    torch.manual_seed(0)
    model = build_model(cfg, 10, 3).to(device).train()
    opt = sgd(model, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(steps, 128, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (steps, 128), device=device)
    start = time.perf_counter()
    for i in range(steps):
        loss, _, _ = model(x[i], y[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def overhead(device: str) -> None:
    cfg = resolved(*OVERHEAD, f"trainer.accelerator={'cuda' if device.startswith('cuda') else 'cpu'}")
    bare_loop(cfg, 4, device)  # warm-up
    with tempfile.TemporaryDirectory() as d:
        summary = run(cfg, d)
    framework = summary["epochs"][0]["train_time_s"]
    steps = summary["epochs"][0]["train_images"] // 128
    bare = bare_loop(cfg, steps, device)
    print(f"trainer overhead, ResNet-20 on 32x32, {steps} steps of 128: framework {framework:.2f} s, "
          f"bare loop {bare:.2f} s, ratio {framework / bare:.3f}")


NETWORKS = {  # name: (backbone override, input channels, image size, classes); batch: --batch, small_cnn 64
    "small_cnn": ("backbone=small_cnn", 1, 28, 10),  # Fashion-MNIST's shape: 7x7 maps, M = 49 < d = 256
    "resnet50": ("backbone=resnet50", 3, 224, 1000),  # 14x14 under gcp/3g (last stride dropped), M = 196
}


def head_throughput(args) -> None:
    """Training images/s of each head on each network, timed in interleaved rounds; GCP/GAP and 3G/GAP
    are medians of per-round ratios (goal, issue 23: small_cnn GCP/GAP >= 0.65)."""
    from _timing import ratio_quartiles, round_times
    from torch.utils.flop_counter import FlopCounterMode

    device = args.device
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    for net in args.networks:
        backbone, channels, size, classes = NETWORKS[net]
        b = 64 if net == "small_cnn" else args.batch
        steps, flops = {}, {}
        for head in ("gap", "gcp", "3g"):
            model = build_model(resolved(backbone, f"head={head}"), classes, channels).to(device)
            if args.channels_last:
                model = model.to(memory_format=torch.channels_last)
            opt = sgd(model, lr=0.01, momentum=0.9, nesterov=False, weight_decay=0.0)
            step_model = torch.compile(model) if args.compile else model
            x = torch.randn(b, channels, size, size, device=device)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, classes, (b,), device=device)
            amp = torch.autocast(torch.device(device).type, dtype=dtype) if dtype else contextlib.nullcontext()

            def step(amp=amp, step_model=step_model, x=x, y=y, opt=opt):  # this iteration's objects
                with amp:
                    loss, _, _ = step_model(x, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            with FlopCounterMode(display=False) as counter:
                step()
            flops[head], steps[head] = counter.get_total_flops(), step
            for _ in range(args.warmup):
                step()
        times = round_times(steps, args.rounds)
        for head in steps:
            seconds = sorted(times[head])[len(times[head]) // 2]
            row = {"network": net, "head": head, "batch": b, "images_per_s": round(b / seconds, 1),
                   "tflops": round(flops[head] / seconds / 1e12, 3),
                   "gflop_per_image": round(flops[head] / b / 1e9, 2)}
            if head != "gap":  # throughput ratio = GAP's time / this head's time
                low, mid, high = ratio_quartiles(times, "gap", head)
                row[f"{head}/gap images_per_s"] = f"{mid:.2f} ({low:.2f}-{high:.2f})"
            print(json.dumps(row), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of one step per head")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--amp", default=None, choices=[None, "bf16", "fp16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()
    if not args.skip_overhead:
        overhead(args.device)
    head_throughput(args)


if __name__ == "__main__":
    main()
