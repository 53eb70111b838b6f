"""lgm-gcp-detect: every detector's score against an independent computation, the metrics against
hand-computed values and pytorch-ood's own, the attacks inside their ε-balls, the open-set split, and one
end-to-end run on a tiny real L-GM model."""

import json

import pytest
import torch
from pytorch_ood.detector import EnergyBased, Mahalanobis
from pytorch_ood.metrics import OODMetrics

from lgm_gcp.analysis.runs import load_run
from lgm_gcp.detection import detectors as D
from lgm_gcp.detection.attacks import attack, fgsm, iterative
from lgm_gcp.detection.evaluate import cli as detect_cli
from lgm_gcp.detection.evaluate import detect, group_labels, table
from lgm_gcp.detection.metrics import ood_metrics
from lgm_gcp.losses.lgm import LGMLoss

from conftest import resolved


@pytest.fixture(scope="module")
def loaded(lgm_2d_run):
    _, data, model = load_run(lgm_2d_run)
    images, labels = next(data.test_batches(64))
    return model, data, images, labels, data.mean.view(1, -1, 1, 1), data.std.view(1, -1, 1, 1)


# ----------------------------------------------------------------------------------------- metrics
def test_metrics_on_hand_computed_scores():
    """Clean scores 0, 1, 2 against abnormal 1.5, 3 (abnormal positive, higher = more abnormal).
    AUROC: of the 6 (abnormal, clean) pairs 1.5 beats 0 and 1, 3 beats all three: 5/6.
    FPR95: catching >= 95 % of the abnormal needs the threshold at 1.5, which flags the clean 2: 1/3.
    AUPR-OUT: descending 3A 2C 1.5A; (recall, precision) from (0, 1): (.5, 1), (.5, .5), (1, 2/3), the
    curve ending at full recall; trapezoids 0.5 + 0 + 0.5 (0.5 + 2/3)/2 = 19/24.
    AUPR-IN (clean positive, scores negated): 0C 1C 1.5A 2C: (1/3, 1), (2/3, 1), (2/3, 2/3), (1, 3/4);
    1/3 + 1/3 + 0 + (1/3)(2/3 + 3/4)/2 = 65/72."""
    m = ood_metrics(torch.tensor([0.0, 1, 2]), torch.tensor([1.5, 3]))
    assert m == pytest.approx({"AUROC": 5 / 6, "FPR95": 1 / 3, "AUPR-OUT": 19 / 24, "AUPR-IN": 65 / 72}, abs=1e-12)


def test_metrics_equal_pytorch_oods_on_the_same_scores():
    """pytorch-ood's OODMetrics is its own implementation (counts per threshold); ties included."""
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 40, (300,), generator=g).double()
    abnormal = torch.randint(10, 60, (200,), generator=g).double()
    theirs = OODMetrics().update(torch.cat([clean, abnormal]),
                                 torch.cat([torch.zeros(300), -torch.ones(200)]).long()).compute()
    ours = ood_metrics(clean, abnormal)
    for ours_key, their_key in (("AUROC", "AUROC"), ("AUPR-IN", "AUPR-IN"), ("AUPR-OUT", "AUPR-OUT"),
                                ("FPR95", "FPR95TPR")):
        assert ours[ours_key] == pytest.approx(theirs[their_key], abs=1e-9), ours_key


# --------------------------------------------------------------------------------------- detectors
def _features(n=60, d=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    z = torch.randn(n, d, generator=g, dtype=torch.float64) + 3 * torch.eye(classes, d, dtype=torch.float64)[y]
    return z, y


def test_mahalanobis_equals_a_hand_fitted_gaussian_with_shared_covariance():
    """μ_k the class means, S = Σ_k Σ_{i∈k} (z_i − μ_k)(z_i − μ_k)ᵀ + 1e-6·I (pytorch-ood does not divide
    by N), score ½ min_k (z − μ_k)ᵀ S⁻¹ (z − μ_k), solved in float64 (pytorch-ood fits in float32)."""
    z, y = _features()
    fitted = D.build("mahalanobis", _Net(LGMLoss(5, 3)), 5, std=[1.0]).fit_features(z.float(), y)
    mu = torch.stack([z[y == k].mean(0) for k in range(3)])
    scatter = sum((z[y == k] - mu[k]).T @ (z[y == k] - mu[k]) for k in range(3)) + 1e-6 * torch.eye(5)
    queries = torch.randn(7, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    d2 = torch.stack([((queries - mu[k]) * torch.linalg.solve(scatter, (queries - mu[k]).T).T).sum(1)
                      for k in range(3)], 1)
    torch.testing.assert_close(fitted.predict_features(queries.float()).double(), 0.5 * d2.min(1).values, rtol=1e-4,
                               atol=1e-6)


def test_projected_mahalanobis_on_every_component_is_the_mahalanobis_score():
    """Above --max-cov-dim the features are projected onto principal components; with as many components
    as dimensions the projection is a rotation, under which the tied-covariance score (ridge included)
    does not change. The basis is orthonormal."""
    z, y = _features(d=6)
    model = _Net(LGMLoss(6, 3))
    projected = D.build("mahalanobis", model, 6, std=[1.0], max_cov_dim=4, pca_dim=6)
    assert isinstance(projected, D.Projected)
    projected.fit_features(z.float(), y)
    plain = Mahalanobis(None).fit_features(z.float(), y)
    queries = torch.randn(9, 6, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(projected.predict_features(queries), plain.predict_features(queries), rtol=1e-3,
                               atol=1e-6)
    torch.testing.assert_close(projected.basis.T @ projected.basis, torch.eye(6), atol=1e-5, rtol=0)


def test_energy_is_minus_logsumexp_and_lgm_is_the_half_distance_to_the_predicted_mean():
    f = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 5.0]], dtype=torch.float64)
    expected = -torch.log(torch.exp(f).sum(1))
    torch.testing.assert_close(EnergyBased(None).predict_logits(f), expected)
    criterion = LGMLoss(2, 3)
    with torch.no_grad():
        criterion.means.copy_(torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]))
        criterion.log_sigma.fill_(torch.log(torch.tensor(2.0)))
    z = torch.tensor([[1.0, 1.0], [3.0, 1.0]])
    # nearest means: (0, 0) at ‖·‖² = 2 and (4, 0) at 2; ½ · 2 / σ = 0.5 with σ = 2
    torch.testing.assert_close(D.LGMLikelihood(None, criterion).predict_features(z), torch.tensor([0.5, 0.5]).double(),
                               rtol=1e-6, atol=1e-6)


def test_lgm_likelihood_with_unit_sigma_is_mahalanobis_with_identity_covariance_and_the_learnt_means():
    """σ = 1: d_ŷ(z) = ½‖z − μ_ŷ‖² with ŷ the nearest learnt mean, = pytorch-ood's Mahalanobis score
    ½ min_k (z − μ_k)ᵀ I (z − μ_k) with μ set to the learnt means and S⁻¹ = I."""
    criterion = LGMLoss(4, 5)
    z = torch.randn(50, 4, generator=torch.Generator().manual_seed(3))
    mahalanobis = Mahalanobis(None)
    mahalanobis.mu, mahalanobis.precision = criterion.means.detach().clone(), torch.eye(4)
    torch.testing.assert_close(D.LGMLikelihood(None, criterion).predict_features(z).float(),
                               mahalanobis.predict_features(z))


def test_lgm_linear_head_differs_from_its_logits_by_one_term_per_input():
    """With one σ: −½‖z − μ_k‖²/σ = (μ_k/σ)ᵀz − ½‖μ_k‖²/σ − ½‖z‖²/σ, so W z + b − logits = ½‖z‖²/σ
    for every class (what ViM reads). A per-class σ has no such head."""
    criterion = LGMLoss(3, 4, sigma_init=2.0)
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(4))
    w, b = D.linear_head(criterion)
    gap = z @ w.T + b - criterion.logits(z)
    torch.testing.assert_close(gap, (0.5 * z.square().sum(1) / 2.0)[:, None].expand(6, 4), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        criterion.log_sigma[1] = 0.0
    assert D.linear_head(criterion) is None and "vim: needs a linear last layer" in D.why_not("vim", criterion, 3, 4096)


def test_kde_score_is_minus_log_mean_kernel_of_the_predicted_class():
    """Class 0's training features (0, 0) and (1, 0), h = 1.5, query (0.5, 0) predicted 0: both at
    squared distance 0.25, so the density is exp(−0.25 / 4.5) and the score −log of it = 0.25 / 4.5."""
    kde = D.KernelDensity(None, lambda z: torch.tensor([[1.0, 0.0]]).expand(len(z), 2), 1.5)
    kde.fit_features(torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]]), torch.tensor([0, 0, 1]))
    torch.testing.assert_close(kde.predict_features(torch.tensor([[0.5, 0.0]])), torch.tensor([0.25 / 4.5]).double())


def test_knn_is_the_kth_nearest_normalised_training_feature():
    z, y = _features(n=30, d=4)
    knn = D.build("knn", _Net(LGMLoss(4, 3)), 4, std=[1.0], knn_k=5).fit_features(z.float(), y)
    q = torch.randn(4, 4, generator=torch.Generator().manual_seed(5))
    unit = lambda a: a / a.norm(dim=1, keepdim=True)  # noqa: E731
    expected = torch.cdist(unit(q.double()), unit(z)).sort(1).values[:, 4]
    torch.testing.assert_close(knn.predict_features(q).double(), expected, atol=1e-5, rtol=0)


class _Net(torch.nn.Module):
    def __init__(self, criterion):
        super().__init__()
        self.criterion = criterion

    def features(self, x):
        return x

    def forward(self, x):
        return self.criterion.logits(x)


# ----------------------------------------------------------------------------------------- attacks
def test_linf_attacks_stay_in_their_ball_and_raise_the_loss(loaded):
    """FGSM, BIM and PGD: every pixel within ε of the clean image and inside [0, 1]; the loss rises, and
    the iterative attacks raise it at least as much as FGSM's single step."""
    model, _, images, labels, mean, std = loaded
    ce = torch.nn.functional.cross_entropy
    one_step = fgsm(model, images, labels, 0.05, mean, std)
    for adv in (one_step, *(iterative(model, images, labels, 0.05, mean, std, 10, start) for start in (False, True))):
        assert ((adv - images).abs() <= 0.05 / std + 1e-6).all()
        pixels = adv * std + mean
        assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
        with torch.no_grad():
            assert ce(model(adv), labels) >= ce(model(one_step), labels) > ce(model(images), labels)


@pytest.mark.parametrize("name", ["cw", "deepfool"])
def test_l2_attacks_stay_in_their_ball_and_in_the_pixel_range(loaded, name):
    model, _, images, labels, mean, std = loaded
    adv = attack(name, model, images[:32], labels[:32], None, mean, std, 10, l2_epsilon=0.5)
    pixels, clean_pixels = adv * std + mean, images[:32] * std + mean
    assert ((pixels - clean_pixels).flatten(1).norm(dim=1) <= 0.5 + 1e-4).all()
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    with torch.no_grad():
        assert (model(adv).argmax(1) != labels[:32]).sum() > (model(images[:32]).argmax(1) != labels[:32]).sum()


# -------------------------------------------------------------------------------------- open set
def test_known_classes_relabel_and_keep_the_rest_as_unknown():
    from lgm_gcp.errors import ConfigError
    from lgm_gcp.options.instantiate import instantiate

    whole = instantiate(resolved()["dataset"])
    data = instantiate(resolved("dataset.known_classes=[7,2]")["dataset"])
    assert data.num_classes == 2 and set(data.train_y.tolist()) == {0, 1}
    assert torch.equal(data.test_x[data.test_y == 0], whole.test_x[whole.test_y == 7])
    assert torch.equal(data.unknown_x, whole.test_x[(whole.test_y != 7) & (whole.test_y != 2)])
    assert len(data.train_y) == int(((whole.train_y == 7) | (whole.train_y == 2)).sum())
    # the open set's input: the held-out classes' test images, normalised as the run reads its own
    from lgm_gcp.detection.inputs import Clean, make

    test = data.normalize(data.test_x)
    unknown = make("unknown", None, Clean(None, data, test, data.test_y, data.mean, data.std), 1, 1.0, 10_000)
    held_out = whole.test_x[(whole.test_y != 7) & (whole.test_y != 2)]
    torch.testing.assert_close(unknown.images, whole.normalize(held_out))
    assert unknown.name == "unknown" and not unknown.adversarial
    with pytest.raises(ConfigError, match=r"dataset.known_classes=\[3, 10\]: give distinct class indices in \[0, 9\]"):
        instantiate(resolved("dataset.known_classes=[3,10]")["dataset"])


# ------------------------------------------------------------------------------------- end to end
def test_detect_reports_what_an_independent_computation_gives(lgm_2d_run, capsys):
    """On the tiny L-GM run: FGSM recomputed outside the library with every pair kept, MSP and L-GM's
    likelihood scored by broadcasting, AUROC by pair counting; detect() must report the same. A detector
    and an input set that do not apply are one line each, and the rest still runs."""
    lines = []
    result = detect(lgm_2d_run, ["lgm", "msp", "vim"], ["fgsm", "digits", "unknown", "uniform"], epsilons=[0.1],
                    max_images=300, keep="all", say=lines.append)
    assert [line.split(": ")[2] for line in lines] == ["digits", "unknown"]
    _, data, model = load_run(lgm_2d_run)
    clean = torch.cat([x for x, _ in data.test_batches(256)])[:300]
    labels = torch.cat([y for _, y in data.test_batches(256)])[:300]
    mean, std = data.mean.view(1, -1, 1, 1), data.std.view(1, -1, 1, 1)
    x = clean.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), labels), x)
    adversarial = (clean + 0.1 / std * grad.sign()).clamp(-mean / std, (1 - mean) / std)

    def scores(images):
        with torch.no_grad():
            feats = model.features(images).double()
            means, sigma = model.criterion.means.double(), model.criterion.log_sigma.double().exp()
            half_sq = 0.5 * (feats[:, None, :] - means[None]).square().sum(-1) / sigma
            return {"msp": -model(images).softmax(1).max(1).values.double(),
                    "lgm": half_sq.gather(1, model(images).argmax(1)[:, None])[:, 0]}

    def auroc(clean_scores, abnormal_scores):
        p, n = abnormal_scores[:, None], clean_scores[None, :]
        return ((p > n).double().sum() + 0.5 * (p == n).double().sum()).item() / p.numel() / n.numel()

    ours, theirs = scores(clean), scores(adversarial)
    fgsm_entry, uniform_entry = result["results"]
    assert fgsm_entry["input"] == "fgsm ε=0.1" and fgsm_entry["clean"] == fgsm_entry["abnormal"] == 300
    assert fgsm_entry["perturbation"]["linf_max"] <= 0.1 + 1e-6
    for name in ("msp", "lgm"):
        assert fgsm_entry["metrics"][name]["AUROC"] == pytest.approx(auroc(ours[name], theirs[name]), abs=2e-3), name
    assert uniform_entry["kind"] == "ood" and uniform_entry["abnormal"] == 300
    assert json.loads((lgm_2d_run / "detect.json").read_text()) == result
    assert (lgm_2d_run / "detect_roc.png").read_bytes()[:4] == b"\x89PNG"


def test_table_pools_the_seeds_of_a_run_into_mean_and_spread(tmp_path):
    """Two runs that differ only in seed=N are one row: AUROC 0.80 and 0.90 -> 85.0 ± 7.1 (sample std
    √((0.05² + 0.05²)/1) = 0.0707)."""
    def result(seed, auroc):
        m = {"AUROC": auroc, "FPR95": 0.5, "AUPR-IN": 0.5, "AUPR-OUT": 0.5}
        return {"run_dir": f"/x/loss=lgm,seed={seed}", "detectors": ["lgm"],
                "results": [{"input": "digits", "abnormal": 10, "metrics": {"lgm": m}}]}

    text = table([result(0, 0.8), result(1, 0.9)])
    assert "| loss=lgm | digits | 2 | 10 | 85.0 ± 7.1 |" in text and "Abnormal inputs are the positives" in text
    runs = [tmp_path / f"seed{s}" for s in (0, 1)]
    for run_dir, seed, loss in zip(runs, (0, 1), ("lgm", "softmax")):  # labels: the overrides not all runs share
        run_dir.mkdir()
        (run_dir / "overrides.yaml").write_text(f"- loss={loss}\n- head=gap\n- seed={seed}\n")
    assert group_labels([str(r) for r in runs]) == ["loss=lgm", "loss=softmax"]
    assert group_labels([str(runs[0])]) == ["seed0"]


def test_cli_without_the_ood_extra_is_one_line(lgm_2d_run, monkeypatch, capsys):
    from lgm_gcp.detection import evaluate

    monkeypatch.setattr(evaluate, "_absent", lambda module: module == "pytorch_ood")
    with pytest.raises(SystemExit) as exit_info:
        detect_cli([str(lgm_2d_run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 1 and err == ["lgm-gcp-detect: error: pytorch_ood missing: pip install -e '.[ood]' "
                                                 "(or pip install 'lgm-gcp[ood]')"]
