"""Drift guards: every preset against the fingerprint of its reference, stated beside the preset.

Each preset (a ``conf/experiment/*.yaml`` or a metafile row, ``conf/metafile/``) carries a ``reference:``
block whose values were taken from the paper's reference implementation (the block names the repository
and files): the trainable parameter count of the reference network, the steps per epoch of its data
loader, its LR (and L-GM margin) at chosen steps and the config values of its recipe. The composed
preset must reproduce each, so an edit that changes what a preset trains fails here, naming the preset
and the value.
"""

import math

import pytest
import torch

from lgm_gcp.data.in_memory import epoch_step_count
from lgm_gcp.models.build import build_model
from lgm_gcp.optim import build_schedule
from lgm_gcp.schedules.margin import MarginSchedule

from conftest import experiment_presets, resolved

PRESETS = experiment_presets()


def same(expected, actual) -> bool:
    if isinstance(expected, float) or isinstance(actual, float):
        return isinstance(actual, (int, float)) and math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-15)
    return expected == actual


def departures(expected: dict, actual: dict, prefix: str = "") -> list:
    """The dotted keys where ``actual`` does not hold ``expected``'s values (a nested subset)."""
    out = []
    for key, want in expected.items():
        name, have = f"{prefix}{key}", actual.get(key, "<absent>") if isinstance(actual, dict) else "<absent>"
        if isinstance(want, dict):
            out += departures(want, have, f"{name}.")
        elif isinstance(want, list):
            if not (isinstance(have, list) and len(have) == len(want) and all(map(same, want, have))):
                out.append(f"{name}: {have!r}, reference {want!r}")
        elif not same(want, have):
            out.append(f"{name}: {have!r}, reference {want!r}")
    return out


@pytest.fixture(scope="module", params=PRESETS)
def preset(request):
    cfg = resolved(f"experiment={request.param}")
    assert cfg["reference"] is not None, f"{request.param} states no reference fingerprint"
    return request.param, cfg, cfg["reference"]


def test_every_preset_states_its_source(preset):
    name, _, ref = preset
    assert len(ref["source"]) > 40 and (".py" in ref["source"] or ".prototxt" in ref["source"]
                                        or "own demo" in ref["source"]), f"{name}: source too vague: {ref['source']!r}"


def test_preset_builds_the_references_parameter_count(preset):
    name, cfg, ref = preset
    with torch.device("meta"):
        model = build_model(cfg, cfg["dataset"]["num_classes"], cfg["dataset"]["in_channels"])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == ref["parameters"], (
        f"{name}: {trainable:,} trainable parameters, reference {ref['parameters']:,}")
    dropout = max((m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)), default=0.0)
    assert same(ref["dropout"], dropout), f"{name}: dropout {dropout}, reference {ref['dropout']}"


def test_preset_has_the_references_steps_per_epoch(preset):
    name, cfg, ref = preset
    steps = epoch_step_count(ref["train_images"], cfg["trainer"]["batch_size"], 1, cfg["dataset"]["drop_last"])
    assert steps == ref["steps_per_epoch"], f"{name}: {steps} steps per epoch, reference {ref['steps_per_epoch']}"


def test_preset_has_the_references_lr_and_margin(preset):
    name, cfg, ref = preset
    schedule = build_schedule(cfg["lr_policy"], cfg["optimizer"])
    wrong = [f"step {s}: {schedule(s, ref['steps_per_epoch'])!r}, reference {lr!r}" for s, lr in ref["lr_at_step"]
             if not same(lr, schedule(s, ref["steps_per_epoch"]))]
    assert len(ref["lr_at_step"]) >= 4 and not wrong, f"{name} LR: {wrong}"
    if ref["margin_at_step"]:
        margin = MarginSchedule(**cfg["loss"]["margin"])
        wrong = [f"step {s}: {margin(s)!r}, reference {a!r}" for s, a in ref["margin_at_step"]
                 if not same(a, margin(s))]
        assert not wrong, f"{name} margin: {wrong}"


def test_preset_holds_the_references_recipe(preset):
    name, cfg, ref = preset
    assert ref["config"] and not departures(ref["config"], cfg), f"{name}: {departures(ref['config'], cfg)}"


@pytest.mark.parametrize("edit,expected", [
    ("trainer.batch_size=128", "steps per epoch"), ("head.dim=128", "trainable parameters"),
    ("lr_policy.base_lr=0.2", "LR"), ("optimizer.nesterov=true", "optimizer.nesterov"),
])
def test_a_drifted_preset_fails_its_fingerprint(edit, expected):
    """The guards above catch an edit: the GCP ResNet-50 preset with one value changed."""
    cfg = resolved("experiment=gcp_resnet50_gcp_norm", edit)
    checks = [test_preset_builds_the_references_parameter_count, test_preset_has_the_references_steps_per_epoch,
              test_preset_has_the_references_lr_and_margin, test_preset_holds_the_references_recipe]
    messages = []
    for check in checks:
        try:
            check(("edited", cfg, cfg["reference"]))
        except AssertionError as e:
            messages.append(str(e))
    assert any(expected in m for m in messages), messages


def flat_keys(tree: dict, prefix: str = "") -> set:
    return {k for key, value in tree.items()
            for k in (flat_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}"})}


@pytest.mark.parametrize("preset_name", PRESETS)
def test_a_references_config_states_only_what_its_preset_does_not_set(preset_name):
    """reference.config checks the values a preset relies on from elsewhere (a group option's defaults, a
    GCP policy's lookups): a value the preset sets itself would be written twice, and checked against itself."""
    import yaml

    from lgm_gcp.config.metafile import generated_rows, preset_node

    if preset_name in generated_rows():
        node = preset_node(*generated_rows()[preset_name][:2], generated_rows()[preset_name][2])
    else:
        from conftest import CONF

        node = yaml.safe_load((CONF / "experiment" / f"{preset_name}.yaml").read_text())
    own = {k: v for k, v in node.items() if k not in ("defaults", "reference")}
    restated = flat_keys(node["reference"].get("config", {})) & flat_keys(own)
    assert not restated, f"{preset_name}: reference.config restates what the preset sets: {sorted(restated)}"
