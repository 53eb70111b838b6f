"""An option's schema is derived from its class signature (lgm_gcp/options/derive.py): types, defaults,
ranges, choices and markers written once, in the signature, and checked at compose time."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Annotated, Literal, Mapping, Optional, Sequence

import pytest
from omegaconf import MISSING, OmegaConf

from lgm_gcp.options.derive import recipe_defaults, schema_of
from lgm_gcp.options.fields import COUNT, DROP_RATE, NONNEG, RECIPE, RESUMABLE, Count, NonNeg, Range


@dataclass(frozen=True)
class Schedule:
    policy: Literal["A", "B"] = "A"
    step: Count = 10


class Base:
    def __init__(self, rate: NonNeg = 0.5, *, epochs: Annotated[int, COUNT, RESUMABLE]):
        pass


class Toy(Base):
    def __init__(self, in_features: int, width: Count = 4, mode: Literal["x", "y"] = "y",
                 drop: Annotated[float, DROP_RATE, RECIPE] = 0.25, init: Annotated[Literal["p", "q"], RECIPE] = "p",
                 widths: Sequence[int] = (1, 2), size: Annotated[Optional[int], COUNT] = None,
                 schedule: Schedule | Mapping = Schedule(), free=3, **kwargs):
        super().__init__(**kwargs)


def fields(schema) -> dict:
    return {f.name: f for f in dataclasses.fields(schema)}


def test_every_parameter_becomes_a_typed_field_with_its_default_range_and_choices():
    f = fields(schema_of(Toy, call_site=("in_features",)))
    # the subclass's own parameters, then (through **kwargs) the base's; the call-site one is left out
    assert list(f) == ["_target_", "width", "mode", "drop", "init", "widths", "size", "schedule", "free", "rate",
                       "epochs"]
    assert f["_target_"].default == MISSING and f["epochs"].default == MISSING  # no default: ??? (must be set)
    assert (f["width"].type, f["width"].default, f["width"].metadata["range"]) == (int, 4, Range(low=1))
    assert (f["mode"].type, f["mode"].metadata["choices"]) == (str, ("x", "y"))
    # RECIPE: the config says auto (any type), a range then also takes the word auto, choices gain it
    assert (f["drop"].type, f["drop"].default, f["drop"].metadata["auto"]) == (typing.Any, "auto", True)
    assert f["init"].default == "auto" and f["init"].metadata["choices"] == ("auto", "p", "q")
    assert f["widths"].type == typing.List[int] and f["widths"].default_factory() == [1, 2]
    assert f["size"].type == Optional[int] and f["size"].default is None
    assert f["free"].type is typing.Any and f["free"].default == 3
    assert f["rate"].metadata["range"] == Range(low=0) and f["epochs"].metadata["resumable"]
    nested = f["schedule"].default_factory()  # a dataclass (or its fields as a mapping): a nested schema
    assert dataclasses.asdict(nested) == {"policy": "A", "step": 10}
    assert fields(type(nested))["step"].metadata["range"] == Range(low=1)


def test_omegaconf_checks_the_derived_types():
    cfg = OmegaConf.structured(schema_of(Toy, call_site=("in_features",)))
    cfg.width = "7"  # converted, as Hydra converts command-line values
    assert cfg.width == 7
    with pytest.raises(Exception, match="width"):
        cfg.width = "seven"
    with pytest.raises(Exception, match="widthh"):
        cfg.widthh = 1


def test_a_partial_option_carries_partial():
    f = fields(schema_of(Toy, call_site=("in_features",), partial=True))
    assert f["_partial_"].default is True


def test_auto_means_the_signature_default_where_no_recipe_says():
    assert recipe_defaults(Toy) == {"drop": 0.25, "init": "p"}
    from lgm_gcp.models.heads.covariance import IsqrtCovHead

    assert recipe_defaults(IsqrtCovHead) == {"dropout": 0.0, "mlp": (), "mlp_norm": False, "activation": "relu",
                                             "reduce_init": "kaiming"}


def test_every_range_the_package_declares_is_one_of_the_shared_ones():
    """A sanity check of the markers themselves: the shared ranges hold and refuse what they say."""
    assert NONNEG.holds(0) and not NONNEG.holds(-1e-9)
    assert DROP_RATE.holds(0.0) and not DROP_RATE.holds(1.0) and DROP_RATE.describe() == "in [0, 1)"


def focal_loss_source() -> str:
    """The focal loss of docs/extending.md, as the page shows it: the example is tested, not copied."""
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "extending.md").read_text()
    return re.findall(r"```python\n(.*?)```", page, re.S)[0]


def test_a_new_loss_is_its_class_and_one_yaml(tmp_path, monkeypatch):
    """What a user adds, outside the package (docs/extending.md): a class file and a --config-dir YAML
    naming it. The schema is derived from the class (its own gamma, SoftmaxLoss's options through
    **kwargs), so defaults, typos and ranges behave as for the package's own losses."""
    from lgm_gcp.config.compose import compose
    from lgm_gcp.errors import ConfigError
    from lgm_gcp.models.build import build_model

    (tmp_path / "focal_pkg").mkdir()
    (tmp_path / "focal_pkg" / "__init__.py").write_text("")
    (tmp_path / "focal_pkg" / "focal.py").write_text(focal_loss_source())
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "conf" / "loss").mkdir(parents=True)
    (tmp_path / "conf" / "loss" / "focal.yaml").write_text(
        "defaults:\n  - /schema/loss/focal@_here_\n  - _self_\n_target_: focal_pkg.focal.FocalLoss\n")
    conf = str(tmp_path / "conf")
    cfg = compose(["loss=focal"], search_path=conf)
    assert (cfg.loss.gamma, cfg.loss.init, cfg.loss.label_smoothing) == (2.0, "auto", 0.0)
    with pytest.raises(ConfigError, match=r"loss.gamma=-1.0 is out of range: it must be >= 0"):
        compose(["loss=focal", "loss.gamma=-1"], search_path=conf)
    with pytest.raises(ConfigError, match="gama"):
        compose(["loss=focal", "loss.gama=1"], search_path=conf)
    model = build_model(OmegaConf.to_container(compose(["loss=focal", "loss.gamma=0"], search_path=conf),
                                               resolve=True), num_classes=10, in_channels=1)
    import torch

    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    loss, logits, _ = model(x, y)
    # gamma = 0 is plain cross-entropy
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits, y))


def test_an_option_yaml_without_its_schema_line_is_refused_naming_the_line(tmp_path):
    """Without '/schema/<group>/<name>' an option composes with no check of its keys: a typo in it then
    drew the hint to add the key with +. Now the YAML itself is refused, naming the line to add."""
    from lgm_gcp.config.compose import compose
    from lgm_gcp.errors import ConfigError

    (tmp_path / "head").mkdir()
    (tmp_path / "head" / "mine.yaml").write_text("_target_: lgm_gcp.models.heads.gap.GAPHead\ndropout: 0.1\n")
    with pytest.raises(ConfigError, match=r"head/mine.yaml names no schema: add '- /schema/head/mine@_here_' to "
                                          "its defaults list"):
        compose(["head=mine"], search_path=str(tmp_path))


def test_an_option_class_declares_what_it_cannot_be_composed_with(tmp_path, monkeypatch):
    """The validator asks each chosen option's class (check_composition, given the resolved config); it names
    no head or loss itself. A user's head that refuses label smoothing, from a --config-dir."""
    from lgm_gcp.config.compose import compose
    from lgm_gcp.errors import ConfigError

    (tmp_path / "picky_pkg").mkdir()
    (tmp_path / "picky_pkg" / "__init__.py").write_text("")
    (tmp_path / "picky_pkg" / "picky.py").write_text(
        "from lgm_gcp.errors import ConfigError\nfrom lgm_gcp.models.heads.gap import GAPHead\n\n\n"
        "class PickyHead(GAPHead):\n    @classmethod\n    def check_composition(cls, config):\n"
        "        if config['loss'].get('label_smoothing'):\n"
        "            raise ConfigError('head=picky with loss.label_smoothing: smoothed targets, a picky head')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "conf" / "head").mkdir(parents=True)
    (tmp_path / "conf" / "head" / "picky.yaml").write_text(
        "defaults:\n  - /schema/head/picky@_here_\n  - _self_\n_target_: picky_pkg.picky.PickyHead\n")
    conf = str(tmp_path / "conf")
    compose(["head=picky"], search_path=conf)
    with pytest.raises(ConfigError, match="^head=picky with loss.label_smoothing: smoothed targets"):
        compose(["head=picky", "loss.label_smoothing=0.1"], search_path=conf)


def test_a_derived_schema_unpickles_in_a_fresh_process_as_the_same_schema(tmp_path):
    """Parallel launchers (joblib, submitit) pickle Hydra's ConfigStore for their jobs. Pickled by value, a
    derived schema's list field lost dataclasses.MISSING's identity and a preset's reference.lr_at_step no
    longer composed there; by reference, the job derives the same class (in a fresh process, from its name)."""
    import pickle
    import subprocess
    import sys

    from lgm_gcp.config.schema import ROOT_SCHEMA

    (tmp_path / "root.pkl").write_bytes(pickle.dumps(ROOT_SCHEMA))
    check = ("import pickle, sys, typing\nfrom omegaconf import OmegaConf\n"
             f"schema = pickle.loads(open({str(tmp_path / 'root.pkl')!r}, 'rb').read())\n"
             "reference = typing.get_args(typing.get_type_hints(schema)['reference'])[0]\n"
             "print(schema.__name__, OmegaConf.structured(reference).lr_at_step)\n")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["RootConfig", "[]"], done.stderr[-2000:]
