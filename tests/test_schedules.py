"""LR schedules and the GCP study's policies (Wang et al., CVPR 2020), against values re-derived here
from the policies' closed forms (``CLOSED_FORMS``, e the 0-based epoch, as the study's code writes
them, including its (e − 1) offset)."""

import pytest

from lgm_gcp.schedules import lr
from lgm_gcp.schedules.policies import gcp_policy, lookup

from conftest import resolved


def policy(family, name, **kw):
    return gcp_policy(name, family, lookup(name, family, "base_lr"), lookup(name, family, "epochs"),
                      per_iteration=lookup(name, family, "per_iteration"), **kw)


def _piecewise(e, knots=((0, 0.06), (50, 0.01), (100, 0.001), (150, 1e-5))):
    for (e0, v0), (e1, v1) in zip(knots, knots[1:]):
        if e <= e1:
            return v0 + (v1 - v0) * (e - e0) / (e1 - e0)
    return knots[-1][1]


CLOSED_FORMS = {
    ("resnet", "norm"): lambda e: 0.1 * 0.1 ** (e // 30),
    ("resnet", "fast"): lambda e: 0.1 * (1 - (e - 1) / 52) ** 11,
    ("resnet", "adju"): lambda e: 0.1 * (1 - (e - 1) / 49) ** 2,
    ("mobilenet_v2", "norm"): lambda e: 0.045 * 0.98**e,
    ("mobilenet_v2", "fast"): lambda e: 0.06 * 0.92**e,
    ("mobilenet_v2", "adju"): _piecewise,  # linear 0.06 → 0.01 → 0.001 → 1e-5 at e = 0 / 50 / 100 / 150
}

# values at chosen epochs, rounded as printed in the study's figure and code comments
SPEC_VALUES = {
    ("resnet", "norm"): {0: 0.1, 29: 0.1, 30: 0.01, 59: 0.01, 60: 1e-3, 89: 1e-3, 90: 1e-4, 99: 1e-4},
    ("resnet", "fast"): {0: 0.1233096, 1: 0.1, 2: 0.0807672, 10: 0.0123628, 29: 2.02436e-5},
    ("resnet", "adju"): {0: 0.1041233, 1: 0.1, 2: 0.09596, 10: 0.0666389, 29: 0.0183673, 30: 0.0166597, 49: 4.16493e-5},
    ("mobilenet_v2", "norm"): {0: 0.045, 1: 0.0441, 10: 0.0367683, 50: 0.0163876, 100: 0.00596788, 150: 0.00217332,
                               399: 1.42042e-5},
    ("mobilenet_v2", "fast"): {0: 0.06, 1: 0.0552, 10: 0.0260633, 50: 9.27989e-4, 99: 1.56008e-5},
    ("mobilenet_v2", "adju"): {0: 0.06, 1: 0.059, 10: 0.05, 49: 0.011, 50: 0.01, 51: 0.00982, 99: 0.00118, 100: 0.001,
                               101: 0.0009802, 149: 2.98e-5},
}


@pytest.mark.parametrize("family,name", list(SPEC_VALUES), ids=[f"{f}-{n}" for f, n in SPEC_VALUES])
def test_gcp_policies_match_their_closed_forms(family, name):
    sched = policy(family, name)
    values = sched.epoch_values(steps_per_epoch=7)
    assert len(values) == lookup(name, family, "epochs")
    for epoch, expected in SPEC_VALUES[(family, name)].items():
        assert CLOSED_FORMS[(family, name)](epoch) == pytest.approx(expected, rel=1e-5), epoch
        assert values[epoch] == pytest.approx(expected, rel=1e-5), epoch
        assert sched(epoch * 7 + 6, 7) == values[epoch]  # constant within the epoch


@pytest.mark.parametrize("name,epochs,last", [("norm", 240, 1.66e-6), ("fast", 60, 6.66e-6), ("adju", 100, 3.99e-6)])
def test_shufflenet_linear_per_iteration(name, epochs, last):
    """ShuffleNetV2: 0.5 · (1 − t/(E·I)) per iteration t, I = 1252: exactly 0.25 at t = E·I/2 and
    0.5/(E·I) at the last iteration (1.66e-6 for E = 240)."""
    assert last == pytest.approx(0.5 / (epochs * 1252), rel=5e-3)
    sched, iters = policy("shufflenet_v2", name), 1252
    assert sched(epochs // 2 * iters, iters) == pytest.approx(0.25, abs=1e-12)
    assert sched(epochs * iters - 1, iters) == pytest.approx(last, rel=5e-3)
    assert sched(1, iters) < sched(0, iters) == 0.5


def test_clean_variant_drops_the_epoch_offset():
    assert policy("resnet", "fast", strict_paper=False).epoch_values()[0] == pytest.approx(0.1)
    assert policy("resnet", "adju", strict_paper=False).epoch_values()[1] == pytest.approx(0.1 * (1 - 1 / 49) ** 2)


@pytest.mark.parametrize("backbone,name,expected", [
    ("mobilenet_v2", "fast", (0.06, 100, 96, 4e-5)), ("mobilenet_v2", "adju", (0.06, 150, 192, 4e-5)),
    ("mobilenet_v2", "norm", (0.045, 400, 96, 4e-5)), ("resnet50", "adju", (0.1, 50, 256, 1e-4)),
    ("resnext50", "norm", (0.1, 100, 256, 1e-4)), ("shufflenet_v2", "fast", (0.5, 60, 1024, 4e-5)),
])
def test_one_word_gives_the_papers_recipe(backbone, name, expected):
    cfg = resolved(f"lr_policy={name}", f"backbone={backbone}")
    got = (cfg["lr_policy"]["base_lr"], cfg["trainer"]["max_epochs"], cfg["trainer"]["batch_size"],
           cfg["optimizer"]["weight_decay"])
    assert got == expected and cfg["optimizer"]["momentum"] == 0.9 and not cfg["optimizer"]["nesterov"]


def test_explicit_override_wins_over_the_recipe():
    cfg = resolved("lr_policy=fast", "backbone=mobilenet_v2", "trainer.batch_size=32", "lr_policy.base_lr=0.01",
                   "optimizer.weight_decay=1e-3")
    chosen = (cfg["trainer"]["batch_size"], cfg["lr_policy"]["base_lr"], cfg["optimizer"]["weight_decay"])
    assert chosen == (32, 0.01, 1e-3)


def test_policy_outside_its_families_is_refused_in_one_line():
    from lgm_gcp.errors import ConfigError

    with pytest.raises(ConfigError, match="^lr_policy=fast is defined for the resnet, mobilenet_v2, shufflenet_v2"):
        resolved("lr_policy=fast", "backbone=layer13")
    assert resolved("lr_policy=fast", "backbone=layer13", "lr_policy.family=resnet")["trainer"]["max_epochs"] == 30


def test_logspaced_large_margin_cifar_recipe():
    values = lr.LogSpaced(base_lr=0.1, final_lr=1e-4, epochs=50).epoch_values()
    assert values[0] == pytest.approx(0.1) and values[49] == pytest.approx(1e-4)
    assert values[1] == pytest.approx(0.08685, rel=1e-4) and values[25] == pytest.approx(0.002947, rel=1e-3)


def test_multistep_in_epochs_and_steps_and_warmup():
    s = lr.MultiStep(base_lr=0.1, epochs=90, milestones=[30, 60])
    assert [s(e * 10, 10) for e in (0, 29, 30, 59, 60)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    s = lr.MultiStep(base_lr=0.1, epochs=1, milestones=[60000, 90000], milestones_in_steps=True)
    assert [s(t, 100) for t in (59999, 60000, 90000)] == pytest.approx([0.1, 0.01, 0.001])
    w = lr.Cosine(base_lr=1.0, epochs=10, per_iteration=True, warmup_epochs=1, warmup_start=0.0)
    assert w(0, 100) == 0.0 and w(50, 100) == pytest.approx(0.5 * w.lr_at(0.5, 50)) and w(100, 100) == w.lr_at(1.0, 100)


def test_cosine_and_piecewise_linear_endpoints():
    c = lr.Cosine(base_lr=0.1, epochs=10, per_iteration=True, min_lr=0.001)
    assert c(0, 5) == pytest.approx(0.1) and c(25, 5) == pytest.approx(0.0505) and c(50, 5) == pytest.approx(0.001)
    p = lr.PiecewiseLinear(base_lr=1, epochs=10, knots=[[0, 1.0], [10, 0.0]])
    assert p(5, 1) == pytest.approx(0.5) and p(20, 1) == 0.0


def test_plot_lr_writes_png_of_three_curves(tmp_path):
    from lgm_gcp.schedules.plot import cli, policy_curve

    out = tmp_path / "lr.png"
    cli(["--family", "mobilenet_v2", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    x, y = policy_curve("resnet", "fast", 1252)
    assert len(x) == 30 and y[1] == pytest.approx(0.1)
