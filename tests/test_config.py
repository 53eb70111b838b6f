"""Every YAML composes; every kind of config mistake stops at start-up with one line."""

import math
from importlib import resources
from pathlib import Path

import pytest
import torch

from lgm_gcp.errors import ConfigError
from lgm_gcp.models.build import build_model
from lgm_gcp.optim import build_schedule
from lgm_gcp.options.groups import GROUPS, NON_GROUP_FOLDERS
from lgm_gcp.options.instantiate import instantiate

from conftest import compose, conf_options, resolved, run_cli
from datafiles import make_cifar, make_mnist, make_tree, write_aircraft, write_cars, write_cub

CONF = Path(str(resources.files("lgm_gcp.conf")))
GROUP_OPTIONS = [(g.name, y.stem) for g in sorted(CONF.iterdir())
                 if g.is_dir() and g.name not in NON_GROUP_FOLDERS
                 for y in sorted(g.glob("*.yaml"))]


def test_the_group_list_is_the_folders_of_conf():
    """config.groups is the one list of groups: conf/ holds a folder for each, and no other group."""
    assert {g for g, _ in GROUP_OPTIONS} == set(GROUPS)


DATA_FILES = {  # datasets that read files: a tiny copy in the real format, and the overrides that point at it
    "mnist": (lambda root: make_mnist(root), []),
    "cifar10": (lambda root: make_cifar(root), []),
    "cifar100": (lambda root: make_cifar(root, classes=100), []),
    "imagenet": (lambda root: make_tree(root), ["dataset.num_classes=3"]),
    "places365": (lambda root: make_tree(root), ["dataset.num_classes=3"]),
    "cub": (lambda root: write_cub(root), ["dataset.num_classes=3"]),
    "aircraft": (lambda root: write_aircraft(root), ["dataset.num_classes=2"]),
    "cars": (lambda root: write_cars(root), ["dataset.num_classes=3"]),
}


def build_everything(cfg: dict, num_classes: int, in_channels: int) -> None:
    """What a run builds from a config, on the meta device (shapes, no memory): the network, the
    optimizer over it, and the LR schedule evaluated across its whole length."""
    with torch.device("meta"):
        model = build_model(cfg, num_classes, in_channels)
    optimizer = instantiate(cfg["optimizer"])(model, lr=0.1)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == sum(p.requires_grad for p in model.parameters())
    schedule = build_schedule(cfg["lr_policy"], cfg["optimizer"])
    lrs = [schedule(step, 100) for step in range(0, 100 * cfg["lr_policy"]["epochs"], 97)]
    assert all(math.isfinite(lr) and lr >= 0 for lr in lrs) and max(lrs) > 0


@pytest.mark.parametrize("group,option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_config_option_instantiates(group, option, tmp_path):
    """Each option of each group composes, validates and builds what it names: its dataset reads
    (a tiny copy of) its files, its model, optimizer and schedule are constructed and used."""
    overrides = [f"{group}={option}"]
    if group == "lr_policy" and option == "piecewise_linear":
        overrides.append("lr_policy.knots=[[0,0.1],[10,0.01]]")
    if group == "lr_policy" and option in ("norm", "fast", "adju"):
        overrides.append("backbone=resnet18")
    if group == "backbone" and option == "timm":  # any timm model: its smallest ResNet here
        overrides.append("backbone.name=test_resnet")
    if group == "dataset" and option in DATA_FILES:
        write, extra = DATA_FILES[option]
        write(tmp_path / option)
        overrides += [f"dataset.root={tmp_path / option}", *extra]
    cfg = resolved(*overrides)
    if group == "dataset":
        data = instantiate(cfg["dataset"], num_workers=0)
        images, labels = next(iter(data.train_batches(2, seed=0, epoch=0)))
        assert images.shape[:2] == (2, data.in_channels) and labels.max() < data.num_classes
    build_everything(cfg, cfg["dataset"]["num_classes"], cfg["dataset"]["in_channels"])


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
    """Each YAML option of each group, and each preset a metafile row generates, is listed."""
    from lgm_gcp.config.metafile import generated_presets

    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    listed = {ln.split(":", 1)[0].strip(): ln.split(":", 1)[1].strip().split(", ")
              for ln in result.stdout.split("== Examples ==")[0].splitlines() if ln.startswith("  ")}
    for group, option in GROUP_OPTIONS + [("experiment", p) for p in generated_presets()]:
        assert option in listed[group], (group, option)
    assert "lgm-gcp-train -m" in result.stdout
    assert "schema" not in result.stdout.split("== Examples ==")[0]


def test_cfg_job_prints_the_composed_config(tmp_path):
    result = run_cli("--cfg", "job", "loss.label_smoothing=0.2", cwd=tmp_path)
    assert result.returncode == 0
    assert "label_smoothing: 0.2" in result.stdout and "_target_: lgm_gcp.losses.softmax.SoftmaxLoss" in result.stdout


def _schema_default(f):
    import dataclasses

    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


@pytest.mark.parametrize("path", sorted(p for g in ("dataset", "backbone", "head", "loss", "lr_policy", "optimizer",
                                                    "trainer", "logger") for p in (CONF / g).glob("*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_an_option_yaml_sets_only_what_differs_from_its_schema(path):
    """The schema (the class signature) owns every default: a YAML option that restated one would be a
    second place to edit. Read as Hydra reads it (OmegaConf's YAML: 5e-4 is a float, not PyYAML's string),
    with a ``_global_`` option's keys under its group (the GCP LR policies)."""
    import dataclasses

    from omegaconf import OmegaConf

    from lgm_gcp.config.register import option_schemas

    group = path.parent.name
    data = OmegaConf.to_container(OmegaConf.load(path))
    (schema,) = [option_schemas()[group, d.split("/")[3].split("@")[0]] for d in data["defaults"]
                 if isinstance(d, str) and d.startswith("/schema/")]
    if "_target_" not in data and isinstance(data.get(group), dict):
        data = data[group]
    repeated = []
    for f in dataclasses.fields(schema):
        default, value = _schema_default(f), data.get(f.name)
        if f.name not in data or default is None:
            continue
        if dataclasses.is_dataclass(default):
            repeated += [f"{f.name}.{g.name}" for g in dataclasses.fields(default)
                         if g.name in value and value[g.name] == _schema_default(g)]
        elif value == default:
            repeated.append(f.name)
    assert not repeated, f"{path} repeats its schema's defaults: {repeated}"


def test_errors_inside_a_config_dir_are_read_from_the_exceptions_not_hydras_text(tmp_path):
    """An option YAML that sets a key its class does not take is named with its class's keys (Hydra's text
    says "In 'loss/softmax2'", which was once read as a preset clash); an option a preset's defaults list
    names and no folder holds lists the options of every folder on the search path, --config-dir's too."""
    (tmp_path / "loss").mkdir()
    (tmp_path / "experiment").mkdir()
    (tmp_path / "loss" / "softmax2.yaml").write_text(
        "defaults:\n  - /schema/loss/softmax@_here_\n  - _self_\n_target_: lgm_gcp.losses.softmax.SoftmaxLoss\n"
        "gama: 1\n")
    (tmp_path / "experiment" / "bad.yaml").write_text("# @package _global_\ndefaults:\n  - override /loss: bogus\n")
    from lgm_gcp.config.compose import compose as compose_in

    with pytest.raises(ConfigError) as e:
        compose_in(["loss=softmax2"], search_path=str(tmp_path))
    assert str(e.value) == ("unknown key 'loss.gama' for SoftmaxLossConfig; valid keys: _target_, init, "
                            "label_smoothing, class_weights, ignore_index")
    with pytest.raises(ConfigError) as e:
        compose_in(["experiment=bad"], search_path=str(tmp_path))
    valid = ", ".join(sorted(conf_options("loss") + ["softmax2"]))
    assert str(e.value) == f"unknown loss option 'bogus'; valid: {valid}"
