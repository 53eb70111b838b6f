"""Every YAML composes; every kind of config mistake stops at start-up with one line."""

from importlib import resources
from pathlib import Path

import pytest

from conftest import compose, run_cli
from lgm_gcp.config import ConfigError

CONF = Path(str(resources.files("lgm_gcp.conf")))
GROUP_OPTIONS = [(g.name, y.stem) for g in sorted(CONF.iterdir()) if g.is_dir() and g.name not in ("hydra", "table", "__pycache__")
                 for y in sorted(g.glob("*.yaml"))]


@pytest.mark.parametrize("group,option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_config_option_composes_and_validates(group, option):
    overrides = [f"{group}={option}"]
    if group == "lr_policy" and option == "piecewise_linear":
        overrides.append("lr_policy.knots=[[0,0.1],[10,0.01]]")
    if group == "lr_policy" and option in ("norm", "fast", "adju"):
        overrides.append("backbone=resnet18")
    cfg = compose(*overrides)
    node = cfg if group == "experiment" else cfg[group]
    if group not in ("experiment", "trainer"):
        assert node._target_.startswith(("lgm_gcp.", "torch."))


@pytest.mark.parametrize("override,expected", [
    ("trainer.max_epoch=3", ["unknown key 'trainer.max_epoch'", "max_epochs"]),
    ("trainer.max_epochs=three", ["invalid value 'three' for 'trainer.max_epochs'", "expected int"]),
    ("loss=softmx", ["unknown loss option 'softmx'", "softmax"]),
    ("+loss.gama=2", ["unknown key 'loss.gama'", "label_smoothing"]),
    ("+trainer.foo=1", ["unknown key 'trainer.foo'", "max_epochs"]),
    ("head.dropot=0.1", ["unknown key 'head.dropot'", "dropout"]),
])
def test_config_mistakes_raise_one_line_naming_key_and_valid_choices(override, expected):
    with pytest.raises(ConfigError) as err:
        compose(override)
    message = str(err.value)
    assert "\n" not in message
    for text in expected:
        assert text in message


def test_allow_extra_lets_additions_through():
    cfg = compose("+loss.note=hello", "trainer.allow_extra=true")
    assert cfg.loss.note == "hello"


def test_sweep_with_one_unknown_option_is_refused():
    with pytest.raises(ConfigError, match="unknown head option 'gpc'"):
        compose("head=gap,gpc")


@pytest.mark.parametrize("override,expected", [("loss=softmx", "unknown loss option 'softmx'"),
                                               ("trainer.max_epoch=3", "unknown key 'trainer.max_epoch'")])
def test_cli_prints_one_error_line_and_exits_2(tmp_path, override, expected):
    result = run_cli(override, cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0]
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("metrics.json"))


def test_help_lists_groups_options_and_examples(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for group, option in GROUP_OPTIONS:
        line = next(ln for ln in result.stdout.splitlines() if ln.strip().startswith(f"{group}:"))
        assert option in line
    assert "lgm-gcp-train -m" in result.stdout
    assert "schema" not in result.stdout.split("== Examples ==")[0]


def test_cfg_job_prints_the_composed_config(tmp_path):
    result = run_cli("--cfg", "job", "loss.label_smoothing=0.2", cwd=tmp_path)
    assert result.returncode == 0
    assert "label_smoothing: 0.2" in result.stdout and "_target_: lgm_gcp.losses.softmax.SoftmaxLoss" in result.stdout
