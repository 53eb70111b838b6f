"""Every pooling head's training cost against GAP's, on four trunks, in one process.

For each trunk (small_cnn on 28 px digits-sized inputs, timm's convnext_atto and vit_tiny_patch16_224 (its
tokens) at 224 px, ResNet-50 at 224 px) and each head (gap, gcp, 3g, dropcov, isice, sot, bcnn, cbp, and the
GCP head with each square root), one SGD training step (forward, backward, update) of the whole network with a
10-class softmax, timed by torch.utils.benchmark in interleaved rounds (benchmarks/_timing.py). Printed:

  speed   GAP's step time over the head's (images/s as a fraction of GAP's; 1 = as fast; goal >= 0.8 on the
          two timm trunks, >= 0.5 on small_cnn)
  memory  the head's activation memory over GAP's: on CUDA the peak allocated during a step less the
          weights', on the CPU the bytes autograd saves for the backward (its activations; the CPU allocator
          keeps no peak) (goal <= 1.5)

    python benchmarks/bench_second_order.py [--device cuda] [--trunks small_cnn convnext_atto vit_tiny resnet50]
        [--heads gap gcp ...] [--batch 8] [--rounds 5] [--out docs/results/second_order/bench.jsonl]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from _timing import ratio_quartiles, round_times
from omegaconf import OmegaConf

from lgm_gcp.config.compose import compose
from lgm_gcp.markdown import markdown_header, markdown_row
from lgm_gcp.models.build import build_model

TRUNKS = {  # name -> (overrides, image side, channels)
    "small_cnn": (["backbone=small_cnn", "dataset=digits", "dataset.input_size=28"], 28, 1),
    "convnext_atto": (["backbone=timm", "backbone.name=convnext_atto"], 224, 3),
    "vit_tiny": (["backbone=timm", "backbone.name=vit_tiny_patch16_224"], 224, 3),
    "resnet50": (["backbone=resnet50"], 224, 3),
}
HEADS = {"gap": [], "gcp": [], "3g": [], "dropcov": [], "isice": [], "sot": [], "bcnn": [], "cbp": [],
         "gcp_taylor": ["head.sqrt=taylor"], "gcp_pade": ["head.sqrt=pade"], "gcp_svd_pade": ["head.sqrt=svd_pade"]}


def network(trunk: str, head: str, device: str) -> torch.nn.Module:
    overrides, _, channels = TRUNKS[trunk]
    option = head.split("_")[0] if head.startswith("gcp_") else head
    cfg = OmegaConf.to_container(compose([*overrides, f"head={option}", *HEADS[head], "dataset.num_classes=10",
                                          f"dataset.in_channels={channels}"]), resolve=True)
    return build_model(cfg, 10, channels).to(device).train()


def step_of(model, images, labels):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return step


def activation_bytes(model, images, labels) -> int:
    """Peak CUDA memory of one step above the weights', or on the CPU the bytes autograd saves."""
    if images.is_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        F.cross_entropy(model(images), labels).backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    seen: dict = {}

    def pack(t):
        seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(images), labels)
    loss.backward()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for (ptr, _), n in seen.items() if ptr not in params)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--trunks", nargs="+", default=list(TRUNKS), choices=list(TRUNKS))
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS))
    parser.add_argument("--batch", type=int, default=None, help="default: 64 on small_cnn, 8 on the others")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None, help="append one JSON line per (trunk, head)")
    args = parser.parse_args()
    heads = ["gap"] + [h for h in args.heads if h != "gap"]
    print(markdown_header(["trunk", "head", "speed vs GAP (q1-q3)", "activation memory vs GAP", "step ms"]))
    for trunk in args.trunks:
        side, channels = TRUNKS[trunk][1:]
        batch = args.batch or (64 if trunk == "small_cnn" else 8)
        torch.manual_seed(0)
        images = torch.randn(batch, channels, side, side, device=args.device)
        labels = torch.randint(0, 10, (batch,), device=args.device)
        models, steps, memory = {}, {}, {}
        for head in heads:
            try:
                models[head] = network(trunk, head, args.device)
            except Exception as e:  # a head that refuses this trunk says so in its row
                print(markdown_row([trunk, head, f"refused: {str(e).splitlines()[0][:90]}", "", ""]))
                continue
            steps[head] = step_of(models[head], images, labels)
            memory[head] = activation_bytes(models[head], images, labels)
        times = round_times(steps, args.rounds)
        for head in steps:
            low, mid, high = ratio_quartiles(times, "gap", head)
            ms = 1000 * statistics.median(times[head])
            print(markdown_row([trunk, head, f"{mid:.2f} ({low:.2f}-{high:.2f})",
                                f"{memory[head] / memory['gap']:.2f}", f"{ms:.1f}"]), flush=True)
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps({"device": args.device, "trunk": trunk, "head": head, "batch": batch,
                                        "speed": mid, "speed_q1": low, "speed_q3": high,
                                        "memory": memory[head] / memory["gap"], "step_ms": ms}) + "\n")
        del models, steps


if __name__ == "__main__":
    sys.exit(main())
