"""Loss-layer speed and peak memory, forward + backward, in one process (peak = the rise of the
process's resident-memory high-water mark during one forward + backward, CPU). Each loss is timed
beside Linear + cross-entropy of the same shapes and beside the reference's formulation of it:

  L-GM (lgm_gcp)          reference: the Caffe layer's sums of squared differences (torch.cdist's
                          direct path; the Caffe kernel itself is CUDA-only)
  large-margin (lgm_gcp)  reference: LargeMarginInSoftmaxLoss as tests/references.py restates it
                          (10^6 subtracted from the target logit, softmax and log-softmax over C)

for B = 256, C = 1000 and D in {2048, 256} (the issue's sizes; 32896, the GCP head's, on request),
under each thread count asked for. Goals (issue 17): large-margin <= 1.0x Linear + CE and faster
than its reference; L-GM <= 1.2x.

    python benchmarks/bench_losses.py [--device cuda] [--rounds 15] [--dims 2048 256] [--threads 2 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from _timing import ratio_quartiles, round_times

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from lgm_gcp.losses.large_margin import LargeMarginLoss
from lgm_gcp.losses.lgm import LGMLoss
from lgm_gcp.markdown import markdown_header, markdown_row

from references import large_margin_in_softmax  # noqa: E402


class CaffeLGM(torch.nn.Module):
    """The same objective with the Caffe layer's distances, Σ_d (x_d − μ_kd)² for every pair (torch.cdist's
    direct path, not the ‖x‖² − 2xμ + ‖μ‖² expansion), with autograd."""

    def __init__(self, d, c):
        super().__init__()
        self.means = torch.nn.Parameter(torch.randn(c, d) * (2 / d) ** 0.5)

    def forward(self, x, y, alpha=0.1, lam=0.1):
        dist = 0.5 * torch.cdist(x, self.means, compute_mode="donot_use_mm_for_euclid_dist").square()
        logits = -dist - alpha * dist * F.one_hot(y, self.means.shape[0])
        return F.cross_entropy(logits, y) + lam * 0.5 * (x - self.means[y]).square().sum(1).mean()


class ReferenceLargeMargin(torch.nn.Module):
    def __init__(self, d, c):
        super().__init__()
        self.fc = torch.nn.Linear(d, c)

    def forward(self, x, y):
        return large_margin_in_softmax(self.fc(x), y, 0.3)


class LinearCE(torch.nn.Module):
    def __init__(self, d, c):
        super().__init__()
        self.fc = torch.nn.Linear(d, c)

    def forward(self, x, y):
        return F.cross_entropy(self.fc(x), y)


CASES = {
    "linear+ce": lambda d, c: LinearCE(d, c),
    "lgm": lambda d, c: LGMLoss(d, c),
    "lgm ref": lambda d, c: CaffeLGM(d, c),
    "large-margin": lambda d, c: LargeMarginLoss(d, c),
    "large-margin ref": lambda d, c: ReferenceLargeMargin(d, c),
}
GOALS = {"lgm": 1.2, "large-margin": 1.0}


def loss_of(module, x, y):
    out = module(x, y)
    return out[0] if isinstance(out, tuple) else out


def fwd_bwd_of(name, b, c, d, device):
    torch.manual_seed(0)
    module = CASES[name](d, c).to(device)
    x = (torch.randn(b, d, device=device) * 0.05).requires_grad_()
    y = torch.randint(0, c, (b,), device=device)

    def fwd_bwd():
        module.zero_grad(set_to_none=True)
        x.grad = None
        loss_of(module, x, y).backward()

    return fwd_bwd


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
    parser.add_argument("--dims", type=int, nargs="+", default=[2048, 256])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--number", type=int, default=3, help="runs per case per round")
    args = parser.parse_args()
    b, c = args.batch, args.classes
    print(f"device {args.device}, B = {b}, C = {c}; fwd+bwd, medians over {args.rounds} interleaved rounds of "
          f"{args.number} runs; ratios to Linear + CE (median of per-round ratios, interquartile range in brackets); "
          "peak = extra RSS of ours (CPU)")
    print(markdown_header(["loss", "threads", "D", "Linear + CE ms", "ours ms", "ours ratio", "reference ms",
                           "reference ratio", "goal", "peak MB"]))
    for threads in args.threads:
        torch.set_num_threads(threads)
        for d in args.dims:
            times = round_times({name: fwd_bwd_of(name, b, c, d, args.device) for name in CASES}, args.rounds,
                                args.number)
            ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
            for name, ref_name in (("lgm", "lgm ref"), ("large-margin", "large-margin ref")):
                (low, ours, high), (_, ref, _) = (ratio_quartiles(times, n, "linear+ce") for n in (name, ref_name))
                ok = "met" if ours <= GOALS[name] else "not met"
                peak = max(peak_mb(name, b, c, d), 0.0) if args.device == "cpu" else float("nan")
                print(markdown_row([name, threads, d, f"{ms['linear+ce']:.1f}", f"{ms[name]:.1f}",
                                    f"{ours:.2f} ({low:.2f}–{high:.2f})", f"{ms[ref_name]:.1f}", f"{ref:.2f}",
                                    f"<= {GOALS[name]} ({ok})", f"{peak:.0f}"]), flush=True)


if __name__ == "__main__":
    main()
