"""The GCP study's loss-landscape probe: the stem split, the probe's values, and a training run that the
probe leaves bitwise unchanged."""

import copy
import json

import pytest
import torch

from lgm_gcp.analysis.landscape import cli
from lgm_gcp.engine.landscape import probe, step_sizes
from lgm_gcp.engine.train import run
from lgm_gcp.models.backbones.stem import split_after_stem
from lgm_gcp.models.build import build_model

from conftest import resolved

BACKBONES = {"small_cnn": 16, "layer13": 32, "lgm_simple": 32, "resnet20": 32, "resnet18": 64, "resnext50": 64,
             "mobilenet_v2": 64, "shufflenet_v2": 64, "vgg16_bn": 64, "densenet169": 64}


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_rest_of_stem_is_the_backbone(backbone):
    torch.manual_seed(0)
    model = build_model(resolved(f"backbone={backbone}"), 10, 3).eval()
    stem, rest = split_after_stem(model.backbone)
    x = torch.randn(2, 3, BACKBONES[backbone], BACKBONES[backbone])
    with torch.no_grad():
        torch.testing.assert_close(rest(stem(x)), model.backbone(x))
        convs = []  # the stem is the first block: exactly one convolution runs in it
        hooks = [m.register_forward_hook(lambda *a: convs.append(1)) for m in model.modules()
                 if isinstance(m, torch.nn.Conv2d)]
        stem(x)
        for h in hooks:
            h.remove()
        assert len(convs) == 1


def test_resnet_stem_is_the_studys_conv1_bn1_relu_maxpool():
    model = build_model(resolved("backbone=resnet18"), 10, 3).eval()
    stem, _ = split_after_stem(model.backbone)
    assert stem(torch.randn(1, 3, 64, 64)).shape == (1, 64, 16, 16)  # /2 conv1, /2 max-pool


def test_probe_equals_shifting_the_stem_output_inside_the_whole_network():
    """Independent of the split: a forward hook adds δ·g to the small CNN's first block output (its
    first ReLU) while the whole network runs; g and the gradients there are read with retain_grad."""
    torch.manual_seed(0)
    model = build_model(resolved("backbone.widths=[4,8]"), 10, 1).train()
    images, targets = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    deltas = step_sizes(0.1, 5.0, 4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    got = probe(model, images, targets, step=7, deltas=deltas)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # the model itself untouched

    def shifted(delta, g):
        caught = {}

        def hook(module, args, output):
            out = output + delta * g if g is not None else output
            out.retain_grad()
            caught["y"] = out
            return out

        net = copy.deepcopy(model)
        handle = net.backbone[2].register_forward_hook(hook)  # conv, BN, ReLU: the first block ends here
        loss = net(images, targets, 7)[0]
        loss.backward()
        handle.remove()
        return loss.item(), caught["y"].grad

    _, g = shifted(0.0, None)
    losses, gaps = zip(*[(lambda lg: (lg[0], (lg[1] - g).norm().item()))(shifted(d, g)) for d in deltas])
    assert got["step"] == 7
    assert (got["loss_min"], got["loss_max"]) == pytest.approx((min(losses), max(losses)), rel=1e-5)
    assert (got["grad_min"], got["grad_max"]) == pytest.approx((min(gaps), max(gaps)), rel=1e-4)
    assert got["loss_max"] > got["loss_min"]  # ascent along +g raises the loss


def test_probing_during_training_leaves_the_run_bitwise_unchanged_and_is_recorded(tmp_path, tiny_cfg):
    extra = ["trainer.max_epochs=2", "head.dropout=0.5"]  # dropout: the probe must not consume the run's RNG
    run(tiny_cfg(*extra), tmp_path / "off")
    summary = run(tiny_cfg(*extra, "trainer.landscape_every=10", "trainer.landscape_points=3"), tmp_path / "on")
    a = torch.load(tmp_path / "off/checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "on/checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [p["step"] for p in summary["landscape"]]
    assert steps == [0, 10, 20, 30, 40]  # 2 epochs of 21 steps
    assert json.loads((tmp_path / "on/metrics.json").read_text())["landscape"] == summary["landscape"]
    out = tmp_path / "fig.png"
    cli([str(tmp_path / "on"), "--labels", "GAP", "--out", str(out)])
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_band_widths_are_the_mean_ranges_over_probes():
    from lgm_gcp.analysis.landscape import band_widths

    probes = [{"step": 0, "loss_min": 1.0, "loss_max": 3.0, "grad_min": 0.1, "grad_max": 0.2},
              {"step": 5, "loss_min": 0.5, "loss_max": 0.5, "grad_min": 0.0, "grad_max": 0.4}]
    # loss ranges 2 and 0, gradient-distance ranges 0.1 and 0.4
    assert band_widths(probes) == pytest.approx((1.0, 0.25))
