"""lgm-gcp-plot-lr: draw LR_norm, LR_fast and LR_adju of one backbone family in one PNG.

    lgm-gcp-plot-lr --family resnet --out lr_resnet.png [--steps-per-epoch 1252] [--clean]
"""

from __future__ import annotations

from lgm_gcp.errors import one_line_parser, output_path, positive_int
from lgm_gcp.schedules.policies import FAMILIES, POLICIES, gcp_policy, lookup


def policy_curve(family: str, policy: str, steps_per_epoch: int, strict_paper: bool = True):
    """(epoch positions, LRs) sampled per epoch, or 8 times per epoch for per-iteration policies."""
    sched = gcp_policy(policy, family, lookup(policy, family, "base_lr"), lookup(policy, family, "epochs"),
                       strict_paper=strict_paper, per_iteration=lookup(policy, family, "per_iteration"))
    per = 8 if sched.per_iteration else 1
    steps = [int(i * steps_per_epoch / per) for i in range(sched.epochs * per)]
    return [s / steps_per_epoch for s in steps], [sched(s, steps_per_epoch) for s in steps]


def plot(family: str, out: str, steps_per_epoch: int = 1252, strict_paper: bool = True) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for policy in POLICIES:
        x, y = policy_curve(family, policy, steps_per_epoch, strict_paper)
        ax.plot(x, y, label=f"LR_{policy} ({lookup(policy, family, 'epochs')} epochs)")
    ax.set(yscale="log", xlabel="epoch", ylabel="learning rate", title=f"GCP-study LR policies: {family}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def cli(argv=None) -> None:
    parser = one_line_parser("lgm-gcp-plot-lr", __doc__.splitlines()[0])
    parser.add_argument("--family", choices=FAMILIES, default="resnet")
    parser.add_argument("--out", default=None, type=output_path, help="PNG path (default lr_<family>.png)")
    parser.add_argument("--steps-per-epoch", type=positive_int, default=1252,
                        help="iterations per epoch (per-iteration policies)")
    parser.add_argument("--clean", action="store_true", help="strict_paper=false: without the (e-1) offset")
    args = parser.parse_args(argv)
    out = args.out or f"lr_{args.family}.png"
    plot(args.family, out, args.steps_per_epoch, not args.clean)
    print(out)
