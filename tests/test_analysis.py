"""Adversarial detection and the 2-D feature plot on a real (tiny) L-GM run."""

import json

import pytest
import torch

from lgm_gcp.analysis.detect import detect, fgsm, kde_scores
from lgm_gcp.analysis.features import plot_features
from lgm_gcp.engine.train import run

from conftest import resolved


@pytest.fixture(scope="module")
def lgm_2d_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("lgm2d")
    run(resolved("experiment=digits_lgm_2d", "backbone.widths=[8,16]", "trainer.max_epochs=4",
                 "trainer.progress=false"), run_dir)
    return run_dir


def mann_whitney_auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """ROC-AUC as the probability that a positive outscores a negative, ties counting one half
    (Hanley & McNeil 1982), by comparing every pair."""
    p, n = positive.double()[:, None], negative.double()[None, :]
    return ((p > n).double().sum() + 0.5 * (p == n).double().sum()).item() / (p.numel() * n.numel())


def test_mann_whitney_auc_on_hand_made_scores():
    """Positives 3, 2, 1 against negatives 2, 0: of the 6 pairs, 3>2, 3>0, 2>0, 1>0 win and 2=2 ties,
    1<2 loses, so AUC = (4 + 0.5) / 6 = 0.75."""
    assert mann_whitney_auc(torch.tensor([3.0, 2, 1]), torch.tensor([2.0, 0])) == 0.75


def test_detect_aucs_equal_an_independent_computation(lgm_2d_run):
    """Recompute, outside the library, FGSM (x + ε/σ·sign ∇x CE, clipped to the pixel range), the max
    softmax, the L-GM likelihood −½‖f − μ_ŷ‖²/σ_ŷ of the predicted class by broadcasting, and the
    AUC by pair counting; detect() must report the same AUCs."""
    from lgm_gcp.analysis.runs import load_run

    result = detect(lgm_2d_run, epsilon=0.1, max_images=300)
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
            predicted = model(images).argmax(1)
            return {"max_softmax": model(images).softmax(1).max(1).values,
                    "lgm_likelihood": -half_sq.gather(1, predicted[:, None])[:, 0]}

    ours, theirs = scores(clean), scores(adversarial)
    assert result["images"] == 300
    for name in ("max_softmax", "lgm_likelihood"):
        assert result["auc"][name] == pytest.approx(mann_whitney_auc(ours[name], theirs[name]), abs=2e-3), name
    assert result["adversarial_accuracy"] < result["clean_accuracy"]
    assert json.loads((lgm_2d_run / "detect.json").read_text()) == result
    assert (lgm_2d_run / "detect_roc.png").read_bytes()[:4] == b"\x89PNG"


def test_fgsm_step_is_bounded_and_raises_the_loss(lgm_2d_run):
    from lgm_gcp.analysis.runs import load_run

    _, data, model = load_run(lgm_2d_run)
    images, labels = next(data.test_batches(64))
    mean, std = data.mean.view(1, -1, 1, 1), data.std.view(1, -1, 1, 1)
    adv = fgsm(model, images, labels, 0.05, mean, std)
    pixels = adv * std + mean
    assert ((adv - images).abs() <= 0.05 / std + 1e-6).all()
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert ce(model(adv), labels) > ce(model(images), labels)


def test_kde_score_is_log_mean_kernel():
    train = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    labels = torch.tensor([0, 0, 1])
    f = torch.tensor([[0.5, 0.0]])
    expected = torch.log(torch.tensor([0.5 * (2 * torch.exp(torch.tensor(-0.25 / (2 * 1.5**2))))])).double()
    torch.testing.assert_close(kde_scores(f, torch.tensor([0]), train, labels, 1.5), expected)


def test_feature_plot_and_its_dimension_check(lgm_2d_run, tmp_path):
    out = plot_features(lgm_2d_run)
    assert out.read_bytes()[:4] == b"\x89PNG"
    run(resolved("backbone.widths=[4,8]", "trainer.max_epochs=1", "trainer.max_steps=1", "trainer.progress=false"),
        tmp_path)
    with pytest.raises(ValueError, match="features are 8-dimensional; a 2-D plot needs 2"):
        plot_features(tmp_path)
