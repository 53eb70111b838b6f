"""Loss-layer speed and peak memory, forward + backward, in one process (peak = the rise of the
process's resident-memory high-water mark during one forward + backward, CPU):

  L-GM (lgm_gcp, norm expansion)  vs  Linear + cross-entropy of the same shapes
                                   vs  a naive broadcast L-GM ((B, C, D) difference tensor) where it fits
  large-margin (lgm_gcp)           vs  Linear + cross-entropy
for B = 256, C = 1000, D in {2048, 32896}. Prints time ratios to Linear + CE (goal: L-GM <= 1.5).

    python benchmarks/bench_losses.py [--device cuda] [--repeats 5] [--dims 2048 32896]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _timing import median_seconds

from lgm_gcp.losses.large_margin import LargeMarginLoss
from lgm_gcp.losses.lgm import LGMLoss


class NaiveLGM(torch.nn.Module):
    """The same objective computed by broadcasting x − μ to (B, C, D)."""

    def __init__(self, d, c):
        super().__init__()
        self.means = torch.nn.Parameter(torch.randn(c, d) * (2 / d) ** 0.5)

    def forward(self, x, y, alpha=0.1, lam=0.1):
        dist = 0.5 * (x[:, None, :] - self.means[None]).square().sum(-1)
        logits = -dist - alpha * dist * F.one_hot(y, self.means.shape[0])
        return F.cross_entropy(logits, y) + lam * 0.5 * (x - self.means[y]).square().sum(1).mean()


class LinearCE(torch.nn.Module):
    def __init__(self, d, c):
        super().__init__()
        self.fc = torch.nn.Linear(d, c)

    def forward(self, x, y):
        return F.cross_entropy(self.fc(x), y)


CASES = {
    "linear+ce": lambda d, c: LinearCE(d, c),
    "lgm": lambda d, c: LGMLoss(d, c),
    "lgm naive": lambda d, c: NaiveLGM(d, c),
    "large-margin": lambda d, c: LargeMarginLoss(d, c),
}


def loss_of(module, x, y):
    out = module(x, y)
    return out[0] if isinstance(out, tuple) else out


def time_case(name, b, c, d, device, repeats):
    torch.manual_seed(0)
    module = CASES[name](d, c).to(device)
    x = (torch.randn(b, d, device=device) * 0.05).requires_grad_()
    y = torch.randint(0, c, (b,), device=device)

    def fwd_bwd():
        module.zero_grad(set_to_none=True)
        x.grad = None
        loss_of(module, x, y).backward()

    return median_seconds(fwd_bwd, repeats, device.startswith("cuda"))


def _status_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_mb(name, b, c, d) -> float:
    """Extra resident memory of one forward + backward (Linux: reset VmHWM via clear_refs)."""
    torch.manual_seed(0)
    module = CASES[name](d, c)
    x = (torch.randn(b, d) * 0.05).requires_grad_()
    y = torch.randint(0, c, (b,))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_kb("VmRSS")
    loss_of(module, x, y).backward()
    return (_status_kb("VmHWM") - base) / 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--dims", type=int, nargs="+", default=[2048, 32896])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    b, c = args.batch, args.classes
    print(f"device {args.device}, B = {b}, C = {c}; fwd+bwd median of {args.repeats}; peak = extra RSS (CPU)")
    for d in args.dims:
        base = time_case("linear+ce", b, c, d, args.device, args.repeats)
        print(f"D = {d}: linear+ce {1000 * base:.1f} ms, peak {peak_mb('linear+ce', b, c, d):.0f} MB")
        for name in ("lgm", "lgm naive", "large-margin"):
            if name == "lgm naive" and b * c * d * 4 > 8 * 2**30:
                print(f"  {name:<13} skipped: the (B, C, D) tensor alone would need {b * c * d * 4 / 2**30:.0f} GiB")
                continue
            t = time_case(name, b, c, d, args.device, args.repeats)
            print(f"  {name:<13} {1000 * t:8.1f} ms  ratio {t / base:5.2f}  peak {peak_mb(name, b, c, d):6.0f} MB")


if __name__ == "__main__":
    main()
