"""Adversarial detection and the 2-D feature plot on a real (tiny) L-GM run."""

import json

import pytest
import torch

from conftest import resolved
from lgm_gcp.analysis.detect import detect, fgsm, kde_scores
from lgm_gcp.analysis.features import plot_features
from lgm_gcp.engine.train import run


@pytest.fixture(scope="module")
def lgm_2d_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("lgm2d")
    run(resolved("experiment=digits_lgm_2d", "backbone.widths=[8,16]", "trainer.max_epochs=4",
                 "trainer.progress=false"), run_dir)
    return run_dir


def test_detect_writes_aucs_for_the_three_scores(lgm_2d_run):
    result = detect(lgm_2d_run, epsilon=0.1, max_images=300)
    assert set(result["auc"]) == {"max_softmax", "kde", "lgm_likelihood"}
    assert all(0.0 <= v <= 1.0 for v in result["auc"].values())
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
