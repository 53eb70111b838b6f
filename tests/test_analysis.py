"""Adversarial detection and the 2-D feature plot on a real (tiny) L-GM run."""

import json

import pytest
import torch

from lgm_gcp.analysis.detect import cli as detect_cli
from lgm_gcp.analysis.detect import detect, fgsm, iterative, kde_scores
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

    result = detect(lgm_2d_run, epsilons=[0.1], max_images=300, keep="all")
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
    (fgsm_result,) = result["results"]
    assert result["images"] == 300 and result["keep"] == "all" and fgsm_result["pairs"] == 300
    for name in ("max_softmax", "lgm_likelihood"):
        assert fgsm_result["auc"][name] == pytest.approx(mann_whitney_auc(ours[name], theirs[name]), abs=2e-3), name
    assert fgsm_result["adversarial_accuracy"] < result["clean_accuracy"]
    # the successful-attack filter: only pairs whose clean image is right and adversarial one wrong
    predicted_clean, predicted_adv = model(clean).argmax(1), model(adversarial).argmax(1)
    kept = (predicted_clean == labels) & (predicted_adv != labels)
    filtered = detect(lgm_2d_run, epsilons=[0.1], max_images=300)
    assert filtered["keep"] == "successful" and filtered["results"][0]["pairs"] == int(kept.sum())
    assert filtered["results"][0]["auc"]["max_softmax"] == pytest.approx(
        mann_whitney_auc(ours["max_softmax"][kept], theirs["max_softmax"][kept]), abs=2e-3)
    result = detect(lgm_2d_run, epsilons=[0.1], max_images=300, keep="all")  # detect.json holds the last call
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


def test_bim_stays_in_the_epsilon_ball_and_beats_fgsm(lgm_2d_run):
    """BIM/PGD: every pixel within ε of the clean image and inside [0, 1]; at the same ε the iterative
    attack raises the loss at least as much as FGSM's single step on this model."""
    from lgm_gcp.analysis.runs import load_run

    _, data, model = load_run(lgm_2d_run)
    images, labels = next(data.test_batches(64))
    mean, std = data.mean.view(1, -1, 1, 1), data.std.view(1, -1, 1, 1)
    ce = torch.nn.functional.cross_entropy
    one_step = fgsm(model, images, labels, 0.05, mean, std)
    for random_start in (False, True):
        adv = iterative(model, images, labels, 0.05, mean, std, steps=10, random_start=random_start)
        assert ((adv - images).abs() <= 0.05 / std + 1e-6).all()
        pixels = adv * std + mean
        assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
        with torch.no_grad():
            assert ce(model(adv), labels) >= ce(model(one_step), labels)


def test_detect_table_over_runs_attacks_and_epsilons(lgm_2d_run, tmp_path, capsys):
    detect_cli([str(lgm_2d_run), "--attacks", "fgsm", "bim", "--epsilon", "0.05", "0.1", "--max-images", "200",
                "--steps", "3", "--out", str(tmp_path)])
    lines = (tmp_path / "detect_table.md").read_text().splitlines()
    rows = [line for line in lines if line.startswith(f"| {lgm_2d_run.name} |")]
    assert [r.split(" | ")[1:3] for r in rows] == [["fgsm", "0.05"], ["fgsm", "0.1"], ["bim", "0.05"], ["bim", "0.1"]]
    assert "AUC lgm_likelihood" in lines[0] and "clean correct and adversarial misclassified" in lines[-1]
    saved = json.loads((lgm_2d_run / "detect.json").read_text())
    assert [(e["attack"], e["epsilon"]) for e in saved["results"]] == [("fgsm", 0.05), ("fgsm", 0.1), ("bim", 0.05),
                                                                      ("bim", 0.1)]


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


def test_device_auto_is_cuda_where_there_is_one_and_a_missing_cuda_is_refused(monkeypatch):
    from lgm_gcp.analysis.runs import resolve_device
    from lgm_gcp.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device cuda:1 but no CUDA device is visible; use --device cpu"):
        resolve_device("cuda:1")
    with pytest.raises(ConfigError, match="--device gpu0 is not a device; give auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
