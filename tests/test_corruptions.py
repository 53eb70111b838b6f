"""ImageNet-C corruptions and ImageNet-P sequences on the fly (lgm_gcp/robustness), their metrics,
and lgm-gcp-robustness on a tiny digits run."""

import colorsys
import json
import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from lgm_gcp.engine.train import run
from lgm_gcp.robustness import corruptions as C
from lgm_gcp.robustness import metrics as M
from lgm_gcp.robustness import ops
from lgm_gcp.robustness import perturbations as P
from lgm_gcp.robustness.evaluate import cli, image_seed, pixels_of

from conftest import TINY, resolved


def scene(size: int, channels: int) -> torch.Tensor:
    """A (1, C, size, size) picture on the 8-bit grid: a colour gradient, a bright disk, a dark bar."""
    t = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    img = torch.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * yy, 0.7 - 0.4 * xx * yy])[:channels]
    img = torch.where(((xx - 0.6) ** 2 + (yy - 0.4) ** 2) < 0.05, torch.full_like(img, 0.95), img)
    img[..., (xx[0] > 0.15) & (xx[0] < 0.3)] *= 0.3
    return ops.to_uint8_grid(img[None])


def gens(seed: int, n: int = 1):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow", "frost", "fog",
          "elastic_transform"}


@pytest.mark.parametrize("size,channels", [(8, 1), (32, 3), (224, 3)])
def test_every_corruption_and_severity_is_seeded_and_changes_the_image(size, channels):
    n = 4 if size < 224 else 1  # impulse noise at 1 % may spare all 64 values of one 8×8 image
    x = scene(size, channels).expand(n, -1, -1, -1)
    for name in C.CORRUPTIONS:
        for severity in range(1, 6):
            a = C.corrupt(x, name, severity, gens(1, n))
            assert a.shape == x.shape and 0 <= a.min() and a.max() <= 1
            assert torch.equal(a, C.corrupt(x, name, severity, gens(1, n))), (name, severity)
            assert not torch.equal(a, x), (name, severity, size)
            assert torch.equal(a * 255, (a * 255).round()), "corrupted images are saved on the 8-bit grid"
            if name in RANDOM:
                assert not torch.equal(a, C.corrupt(x, name, severity, gens(100, n))), (name, severity)


def test_severity_makes_the_corruption_stronger_on_average():
    x = scene(32, 3)
    for name in ("gaussian_noise", "defocus_blur", "contrast", "pixelate", "jpeg_compression", "fog"):
        dist = [(C.corrupt(x, name, s, gens(0)) - x).abs().mean().item() for s in (1, 5)]
        assert dist[1] > dist[0], name


def test_an_image_corruption_does_not_depend_on_its_batch():
    x = torch.cat([scene(32, 3), scene(32, 3).flip(-1)])
    for name in RANDOM:
        both = C.corrupt(x, name, 3, gens(5, 2))
        assert torch.equal(both[1:], C.corrupt(x[1:], name, 3, gens(6))), name


def test_protocol_follows_the_image_size_and_jpeg_85_only_for_imagenet():
    assert C.protocol_for(224, 224) == "imagenet" and C.protocol_for(96, 128) == "imagenet"
    assert C.protocol_for(32, 32) == "cifar" and C.protocol_for(8, 8) == "cifar"
    x = scene(32, 3)
    # contrast is deterministic: under the cifar protocol it is exactly (x − mean)·c + mean, truncated
    # to the 8-bit grid; under the imagenet protocol the same image then passes a JPEG q85 round trip
    c = C.PARAMS["cifar"]["contrast"][0]
    mean = x.mean((2, 3), keepdim=True)
    assert torch.equal(C.corrupt(x, "contrast", 1, gens(0), "cifar"), ops.to_uint8_grid((x - mean) * c + mean))
    c = C.PARAMS["imagenet"]["contrast"][0]
    plain = ops.to_uint8_grid((x - mean) * c + mean)
    assert torch.equal(C.corrupt(x, "contrast", 1, gens(0), "imagenet"), ops.jpeg(plain, 85))


# ------------------------------------------------------------------------ ops against independent code


def test_value_shift_and_saturation_equal_colorsys_hsv():
    x = torch.rand(1, 3, 5, 7, dtype=torch.float64)
    x[0, :, 0, 0] = 0.0  # black
    x[0, :, 0, 1] = 0.5  # grey
    for shift in (0.3, -0.2):
        ours = ops.shift_value(x, shift)
        for i in range(5):
            for j in range(7):
                h, s, v = colorsys.rgb_to_hsv(*x[0, :, i, j].tolist())
                want = colorsys.hsv_to_rgb(h, s, min(max(v + shift, 0), 1))
                assert ours[0, :, i, j].tolist() == pytest.approx(want, abs=1e-12)
    ours = ops.scale_saturation(x, 2.0, 0.1)
    for i in range(5):
        for j in range(7):
            h, s, v = colorsys.rgb_to_hsv(*x[0, :, i, j].tolist())
            if s == 0:  # grey: no hue; kept grey, as scikit-image's hsv2rgb with h = 0 would tint it
                continue
            want = colorsys.hsv_to_rgb(h, min(max(s * 2.0 + 0.1, 0), 1), v)
            assert ours[0, :, i, j].tolist() == pytest.approx(want, abs=1e-12)


def test_clipped_zoom_equals_scipy_zoom_of_the_centre_crop():
    x = torch.rand(1, 1, 32, 32, dtype=torch.float64)
    for factor in (1.06, 1.5, 3.0):
        ch = math.ceil(32 / factor)
        top = (32 - ch) // 2
        z = ndimage.zoom(x[0, 0, top:top + ch, top:top + ch].numpy(), factor, order=1)
        trim = (z.shape[0] - 32) // 2
        np.testing.assert_allclose(ops.clipped_zoom(x, factor)[0, 0].numpy(), z[trim:trim + 32, trim:trim + 32],
                                   atol=1e-12)


def test_motion_blur_is_a_one_sided_gaussian_line():
    x = torch.rand(1, 1, 6, 9, dtype=torch.float64)
    # radius 1: taps i = 0, 1, 2 at x + i (angle 0) or y + i (angle 90), weights exp(−i²/2σ²) normalised
    w = torch.exp(-torch.tensor([0.0, 1.0, 4.0], dtype=torch.float64) / 2)
    w /= w.sum()
    right = sum(w[i] * torch.cat([x[..., i:], x[..., -1:].expand(-1, -1, -1, i)], -1) for i in range(3))
    torch.testing.assert_close(ops.motion_blur(x, 1, 1.0, [0.0]), right, rtol=0, atol=1e-12)
    down = sum(w[i] * torch.cat([x[..., i:, :], x[..., -1:, :].expand(-1, -1, i, -1)], -2) for i in range(3))
    torch.testing.assert_close(ops.motion_blur(x, 1, 1.0, [90.0]), down, rtol=0, atol=1e-12)


def test_disk_kernel_of_radius_three_counts_29_lattice_points():
    # x² + y² ≤ 9: 7 points on x = 0, 5 on each of x = ±1 and ±2, 1 on each of x = ±3; the σ = 0.1
    # anti-aliasing blur moves weight by e^(−1/(2·0.01)) ≈ 2e−22
    k = ops.disk_kernel(3, 0.1)
    assert k.shape == (17, 17) and k.sum().item() == pytest.approx(1.0)
    assert int((k > 1e-10).sum()) == 29 and k[8, 8].item() == pytest.approx(1 / 29)


def test_rotation_and_translation_equal_torchvision():
    x = torch.rand(1, 3, 12, 12, dtype=torch.float64)
    torch.testing.assert_close(ops.warp(x, ops.centred_affine(12, 12, angle=90)[None]),
                               TF.rotate(x, 90, InterpolationMode.BILINEAR), atol=1e-6, rtol=0)
    torch.testing.assert_close(ops.warp(x, ops.centred_affine(12, 12, translate=(3, 0))[None]),
                               TF.affine(x, angle=0, translate=[3, 0], scale=1, shear=[0.0]), atol=1e-6, rtol=0)


def test_untilted_tilt_matrix_is_the_reference_slight_shrink():
    # P1 sets z = 1 and T adds f: (u, v) ↦ (f·(u − w/2)/(1 + f) + w/2, …), a scale of f/(1 + f) about
    # the centre, f = √(w² + h²)
    h, w = 24, 32
    f = math.hypot(w, h)
    m = ops.tilt_matrix(h, w, 0.0)
    m = m / m[2, 2]
    s = f / (1 + f)
    want = torch.tensor([[s, 0, w / 2 * (1 - s)], [0, s, h / 2 * (1 - s)], [0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(m, want, atol=1e-12, rtol=0)


def test_pixelate_by_half_gives_the_block_means():
    x = ops.to_uint8_grid(torch.rand(1, 1, 8, 8))
    blocks = x.reshape(1, 1, 4, 2, 4, 2).mean((3, 5))
    want = (blocks * 255).round().repeat_interleave(2, -1).repeat_interleave(2, -2) / 255
    assert (ops.pixelate(x, 0.5) - want).abs().max().item() <= 1 / 255 + 1e-6


def test_fractal_is_a_normalised_seeded_map():
    a = ops.plasma_fractal(32, 2.0, torch.Generator().manual_seed(0))
    assert a.shape == (32, 32) and a.min().item() == 0.0 and a.max().item() == 1.0
    assert torch.equal(a, ops.plasma_fractal(32, 2.0, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, ops.plasma_fractal(32, 2.0, torch.Generator().manual_seed(1)))


# ------------------------------------------------------------------------------------- perturbations


@pytest.mark.parametrize("size,channels", [(8, 1), (32, 3)])
def test_perturbation_sequences_have_the_protocol_lengths_and_move(size, channels):
    x = scene(size, channels)
    lengths = {"translate": 16, "motion_blur": 21}  # CIFAR-P's
    for name in P.PERTURBATIONS:
        seq = list(P.frames(x, name, gens(3)))
        assert len(seq) == lengths.get(name, 31), name
        assert all(f.shape == x.shape for f in seq)
        assert torch.equal(torch.stack(seq), torch.stack(list(P.frames(x, name, gens(3))))), name
        assert not torch.equal(seq[1], seq[-1]), name
    assert torch.equal(next(P.frames(x, "gaussian_noise", gens(0))), x), "noise sequences start clean"
    assert len(list(P.frames(scene(224, 3), "translate", gens(0)))) == 41  # ImageNet-P's −20 … 20


# -------------------------------------------------------------------------------------------- metrics


def test_ce_and_relative_ce_on_a_hand_made_table():
    errors = {"fog": [0.1, 0.2, 0.3, 0.4, 0.5], "snow": [0.2] * 5}
    base = {"fog": [0.5] * 5, "snow": [0.4] * 5}
    out = M.corruption_summary(errors, 0.05, base, 0.3)
    # fog: 1.5 / 2.5 = 60; relative (1.5 − 5·0.05) / (2.5 − 5·0.3) = 1.25 / 1.0 = 125
    # snow: 1.0 / 2.0 = 50; relative (1.0 − 0.25) / (2.0 − 1.5) = 150
    assert out["CE"] == pytest.approx({"fog": 60, "snow": 50})
    assert out["relative_CE"] == pytest.approx({"fog": 125, "snow": 150})
    assert out["mCE"] == pytest.approx(55) and out["relative_mCE"] == pytest.approx(137.5)
    assert out["mean_error"] == pytest.approx(25) and out["clean_error"] == pytest.approx(5)
    assert M.corruption_summary(errors, 0.05)["mCE"] is None


def test_ratios_over_a_zero_denominator_are_left_out_and_listed():
    # fog: the baseline never erred (Σ = 0): CE undefined; its relative CE needs Σ(B − B_clean) > 0
    # too. snow: CE 1.0 / 2.0 = 50, relative (1.0 − 0.25)/(2.0 − 1.5) = 150
    out = M.corruption_summary({"fog": [0.1] * 5, "snow": [0.2] * 5}, 0.05, {"fog": [0.0] * 5, "snow": [0.4] * 5},
                               0.3)
    assert out["CE"] == {"fog": None, "snow": pytest.approx(50)} and out["mCE"] == pytest.approx(50)
    assert out["relative_mCE"] == pytest.approx(150)
    assert out["undefined"] == ["CE fog", "relative CE fog"]
    # a baseline that never flips under rotate: FR undefined; scale 0.3 / 0.2 = 150
    p = M.perturbation_summary({"rotate": 0.1, "scale": 0.3}, {"rotate": 1.0, "scale": 2.0},
                               {"FP": {"rotate": 0.0, "scale": 0.2}, "T5D": {"rotate": 2.0, "scale": 1.0}})
    assert p["FR"]["rotate"] is None and p["mFP"] == pytest.approx(150) and p["undefined"] == ["FR rotate"]


def test_alexnet_normalisers_match_the_published_means_and_give_100():
    published = {"gaussian_noise": 0.886428, "brightness": 0.564592, "jpeg_compression": 0.6065,
                 "elastic_transform": 0.646056}
    for name, mean in published.items():
        assert sum(M.ALEXNET_ERRORS[name]) / 5 == pytest.approx(mean, abs=5e-7)
    assert list(M.ALEXNET_ERRORS) == list(C.CORRUPTIONS)
    own = M.corruption_summary({c: list(e) for c, e in M.ALEXNET_ERRORS.items()}, M.ALEXNET_CLEAN_ERROR,
                               M.ALEXNET_ERRORS, M.ALEXNET_CLEAN_ERROR)
    assert own["mCE"] == pytest.approx(100) and own["relative_mCE"] == pytest.approx(100)


def test_flip_probability_by_hand():
    top1 = torch.tensor([[1, 0], [1, 1], [2, 0], [2, 1]])  # frames × sequences
    # consecutive: sequence 1 flips once in 3 comparisons, sequence 2 three times: (1/3 + 1)/2
    assert M.flip_probability(top1, to_first=False) == pytest.approx(2 / 3)
    # against frame 0: sequence 1 differs in 2 of 3 (2, 2), sequence 2 in 2 of 3 (1, 1)
    assert M.flip_probability(top1, to_first=True) == pytest.approx(2 / 3)


def test_top5_distance_by_hand():
    first = torch.arange(1, 8)  # class k has rank k + 1
    swapped = torch.tensor([6, 2, 3, 4, 5, 1, 7])  # classes 0 and 5 trade places: |1 − 6| = 5
    dropped = torch.tensor([7, 2, 3, 4, 5, 6, 1])  # class 0 falls to rank 7, capped at 6: again 5
    neighbours = torch.tensor([2, 1, 3, 4, 5, 6, 7])  # ranks 1 and 2 trade: |1 − 2| + |2 − 1| = 2
    ranks = torch.stack([first, swapped, dropped, neighbours])[:, None, :]  # (frames, 1 sequence, K)
    assert M.top5_distance(ranks, to_first=True) == pytest.approx((5 + 5 + 2) / 3)
    # consecutive: first→swapped 5; swapped→dropped: classes ranked 1…5 in 'swapped' are 5, 1, 2, 3, 4,
    # whose ranks in 'dropped' are 6, 2, 3, 4, 5: 5 + 0 + 0 + 0 + 0 = 5; dropped→neighbours: classes
    # 6, 1, 2, 3, 4 have ranks 7→6, 1, 3, 4, 5: 5 + 1 + 0 + 0 + 0 = 6
    assert M.top5_distance(ranks, to_first=False) == pytest.approx((5 + 5 + 6) / 3)


def test_ranks_are_ordinal_with_ties_by_index():
    assert M.ranks_of(torch.tensor([[0.1, 3.0, 2.0], [1.0, 1.0, 0.0]])).tolist() == [[3, 1, 2], [1, 2, 3]]


def test_perturbation_ratios_by_hand():
    out = M.perturbation_summary({"rotate": 0.1, "scale": 0.3}, {"rotate": 1.0, "scale": 2.0},
                                 {"FP": {"rotate": 0.2, "scale": 0.2}, "T5D": {"rotate": 2.0, "scale": 1.0}})
    assert out["FR"] == pytest.approx({"rotate": 50, "scale": 150}) and out["mFP"] == pytest.approx(100)
    assert out["mT5D"] == pytest.approx((50 + 200) / 2) and out["mean_FP"] == pytest.approx(20)


# ---------------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("digits")
    run(resolved(*TINY, "trainer.deterministic=true"), run_dir)
    return run_dir


ARGS = ["--max-images", "40", "--corruptions", "fog", "impulse_noise", "--severities", "1", "5",
        "--perturbations", "shot_noise", "translate"]


def test_robustness_command_counts_errors_as_an_independent_loop(digits_run, capsys):
    from lgm_gcp.analysis.runs import load_run

    cli([str(digits_run), "--baseline", "none", *ARGS, "--batch-size", "7"])
    result = json.loads((digits_run / "robustness.json").read_text())
    assert result["settings"]["images"] == 40 and result["settings"]["protocol"] == "cifar"
    # recount impulse noise at severity 5 and shot noise's flips image by image, without the command's
    # batching; seeds follow the canonical order (impulse_noise is corruption 2, shot_noise
    # perturbation 1), not the order the command was given
    cfg, data, model = load_run(digits_run)
    mean = torch.tensor(cfg["dataset"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(cfg["dataset"]["std"]).view(1, -1, 1, 1)
    images, labels = next(data.test_batches(40))
    wrong, flips = 0, 0.0
    with torch.no_grad():
        for i in range(40):
            px = pixels_of(images[i:i + 1], mean, std)
            noisy = C.corrupt(px, "impulse_noise", 5, [torch.Generator().manual_seed(image_seed(0, 2, 5, i))])
            wrong += int(model((noisy - mean) / std).argmax(1).item() != labels[i].item())
            frames = list(P.frames(px, "shot_noise", [torch.Generator().manual_seed(image_seed(0, 32 + 1, 0, i))]))
            preds = [model((f - mean) / std).argmax(1).item() for f in frames]
            flips += sum(p != preds[0] for p in preds[1:]) / (len(preds) - 1)
    assert result["errors"]["impulse_noise"][1] == pytest.approx(wrong / 40)
    assert result["FP"]["shot_noise"] == pytest.approx(flips / 40)
    assert result["corruption"]["mCE"] is None and result["summary"]["mean_FP"] is not None
    assert "| fog |" in (digits_run / "robustness.md").read_text()


def test_a_run_normalised_by_itself_scores_100_and_earlier_results_are_kept(digits_run, capsys):
    cli([str(digits_run), "--baseline", "none", *ARGS])
    first = (digits_run / "robustness.json").read_text()
    cli([str(digits_run), "--baseline", str(digits_run), *ARGS])
    result = json.loads((digits_run / "robustness.json").read_text())
    kept = sorted(p.name for p in digits_run.glob("robustness-*.json"))
    assert first in [(digits_run / k).read_text() for k in kept]
    s = result["summary"]
    assert s["mCE"] == pytest.approx(100) and s["mFP"] == pytest.approx(100) and s["mT5D"] == pytest.approx(100)
    assert result["baseline"] == str(digits_run)
    assert "| 100.0 |" in capsys.readouterr().out


def test_an_eval_run_without_checkpoints_loads_from_its_weights_file(digits_run, tmp_path):
    """lgm-gcp-eval writes no checkpoint; analyses load the network from the weights file its config
    names (here the digits run's own weights, as a plain state dict)."""
    import shutil

    import yaml

    from lgm_gcp.analysis.runs import load_run

    evaluated = tmp_path / "evaluated"
    shutil.copytree(digits_run, evaluated, ignore=shutil.ignore_patterns("checkpoints"))
    weights = tmp_path / "weights.pth"
    torch.save(torch.load(digits_run / "checkpoints" / "best.pt", weights_only=True)["model"], weights)
    cfg = yaml.safe_load((evaluated / "config.yaml").read_text())
    cfg["weights"] = str(weights)
    (evaluated / "config.yaml").write_text(yaml.safe_dump(cfg))
    _, data, trained = load_run(digits_run)
    _, _, loaded = load_run(evaluated)
    images, _ = next(data.test_batches(16))
    with torch.no_grad():
        assert torch.equal(trained(images), loaded(images))
