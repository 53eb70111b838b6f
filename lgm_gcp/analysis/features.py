"""lgm-gcp-plot-features: the L-GM paper's 2-D feature figure for a run whose feature dimension is 2.

Test features coloured by class; for L-GM runs the learned means (×) and each class's 1σ contour
(the ellipse d_k(x) = ½, i.e. radius √σ_k per axis). Writes features.png into the run folder.
``experiment=digits_lgm_2d`` trains such a run on the embedded digits.

    lgm-gcp-plot-features <run dir>
"""

from __future__ import annotations

from pathlib import Path

from lgm_gcp.analysis.runs import add_device_argument, features_of, load_run, resolve_device
from lgm_gcp.errors import ConfigError, UserError, fail, one_line_parser
from lgm_gcp.losses.lgm import LGMLoss


def plot_features(run_dir: str | Path, device: str = "cpu") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    run_dir = Path(run_dir)
    cfg, data, model = load_run(run_dir, device=device)
    feats, labels = (t.cpu() for t in features_of(model, data.test_batches(256)))
    if feats.shape[1] != 2:
        raise ConfigError(f"{run_dir}: features are {feats.shape[1]}-dimensional; a 2-D plot needs 2 "
                         "(e.g. experiment=digits_lgm_2d, or head.mlp=[2])")
    fig, ax = plt.subplots(figsize=(6, 6))
    cmap = plt.get_cmap("tab10")
    for k in range(data.num_classes):
        pts = feats[labels == k]
        ax.scatter(pts[:, 0], pts[:, 1], s=5, color=cmap(k % 10), alpha=0.6, label=str(k))
    crit = model.criterion
    if isinstance(crit, LGMLoss):
        means = crit.means.detach().cpu()
        sigma = crit.variances().detach().cpu()
        for k, mu in enumerate(means):
            radii = sigma[k].sqrt().expand(2) if sigma.dim() == 1 else sigma[k].sqrt()
            ax.add_patch(Ellipse(mu.tolist(), 2 * radii[0].item(), 2 * radii[1].item(), fill=False,
                                 color=cmap(k % 10), lw=1.5))
            ax.plot(*mu.tolist(), "kx", ms=8)
    ax.set(title=f"test features: {cfg['dataset']['name']}, {type(crit).__name__}", aspect="equal")
    ax.legend(markerscale=3, fontsize=7, ncol=2)
    fig.tight_layout()
    out = run_dir / "features.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def cli(argv=None) -> None:
    parser = one_line_parser("lgm-gcp-plot-features", __doc__.splitlines()[0])
    parser.add_argument("run_dir")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    try:
        print(plot_features(args.run_dir, resolve_device(args.device)))
    except UserError as e:
        fail("lgm-gcp-plot-features", e)
