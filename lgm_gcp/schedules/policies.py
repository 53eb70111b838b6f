"""LR_norm / LR_fast / LR_adju of the GCP study (Wang et al., CVPR 2020), per backbone family.

e is the 0-based epoch; ResNet and MobileNetV2 update per epoch, ShuffleNetV2 per iteration.

| family        | policy | base LR | batch | wd   | epochs | LR(e)                                        |
|---------------|--------|---------|-------|------|--------|----------------------------------------------|
| resnet        | norm   | 0.1     | 256   | 1e-4 | 100    | 0.1 · 0.1^⌊e/30⌋                             |
|               | fast   | 0.1     | 256   | 1e-4 | 30     | 0.1 · (1 − (e−1)/52)^11                      |
|               | adju   | 0.1     | 256   | 1e-4 | 50     | 0.1 · (1 − (e−1)/49)^2                       |
| mobilenet_v2  | norm   | 0.045   | 96    | 4e-5 | 400    | 0.045 · 0.98^e                               |
|               | fast   | 0.06    | 96    | 4e-5 | 100    | 0.06 · 0.92^e                                |
|               | adju   | 0.06    | 192   | 4e-5 | 150    | linear 0.06→0.01→0.001→1e-5 at e = 0/50/100/150 |
| shufflenet_v2 | norm / fast / adju | 0.5 | 1024 | 4e-5 | 240 / 60 / 100 | 0.5 · (1 − t/(E·I)), per iteration |

Published quirks, reproduced with ``strict_paper=true`` (the default):
* LR_fast and LR_adju use (e − 1) with a 0-based e, so epoch 0 runs *above* the base LR (0.1233 and
  0.1041) and epoch 1 is exactly 0.1. ``strict_paper=false`` drops the offset (epoch 0 = base LR).
* MobileNetV2 LR_norm trains 400 epochs (the paper's table and the landscape script); the
  repository's main.py never sets its epochs and would run its default of 90.
* The MobileNetV2 LR_adju figure's "linear(6e−2, 1e−3, 0), …" notation is followed as the code
  defines it: three 50-epoch linear segments, then 1e-5.
"""

from __future__ import annotations

from typing import Annotated, Optional

from lgm_gcp.errors import ConfigError
from lgm_gcp.options.fields import COUNT, NONNEG, NonNeg, Positive, Probability
from lgm_gcp.schedules import lr

_SHUFFLE = {"base_lr": 0.5, "batch_size": 1024, "weight_decay": 4e-5, "per_iteration": True}
TABLE = {
    ("resnet", "norm"): {"base_lr": 0.1, "batch_size": 256, "weight_decay": 1e-4, "epochs": 100,
                         "schedule": (lr.Step, {"step_size": 30, "gamma": 0.1})},
    ("resnet", "fast"): {"base_lr": 0.1, "batch_size": 256, "weight_decay": 1e-4, "epochs": 30,
                         "schedule": (lr.Polynomial, {"power": 11.0, "length": 52.0, "offset": 1.0})},
    ("resnet", "adju"): {"base_lr": 0.1, "batch_size": 256, "weight_decay": 1e-4, "epochs": 50,
                         "schedule": (lr.Polynomial, {"power": 2.0, "length": 49.0, "offset": 1.0})},
    ("mobilenet_v2", "norm"): {"base_lr": 0.045, "batch_size": 96, "weight_decay": 4e-5, "epochs": 400,
                               "schedule": (lr.Exponential, {"gamma": 0.98})},
    ("mobilenet_v2", "fast"): {"base_lr": 0.06, "batch_size": 96, "weight_decay": 4e-5, "epochs": 100,
                               "schedule": (lr.Exponential, {"gamma": 0.92})},
    ("mobilenet_v2", "adju"): {"base_lr": 0.06, "batch_size": 192, "weight_decay": 4e-5, "epochs": 150,
                               "schedule": (lr.PiecewiseLinear,
                                            {"knots": [[0, 0.06], [50, 0.01], [100, 0.001], [150, 1e-5]]})},
    ("shufflenet_v2", "norm"): {**_SHUFFLE, "epochs": 240, "schedule": (lr.Linear, {"final_lr": 0.0})},
    ("shufflenet_v2", "fast"): {**_SHUFFLE, "epochs": 60, "schedule": (lr.Linear, {"final_lr": 0.0})},
    ("shufflenet_v2", "adju"): {**_SHUFFLE, "epochs": 100, "schedule": (lr.Linear, {"final_lr": 0.0})},
}
FAMILIES = ("resnet", "mobilenet_v2", "shufflenet_v2")
POLICIES = ("norm", "fast", "adju")


def family_of(backbone_target: str) -> str:
    """The GCP-study family of a backbone ``_target_`` (ResNeXt counts as a ResNet), or 'none'."""
    name = backbone_target.rsplit(".", 1)[-1].lower()
    if name.startswith(("resnet", "resnext")) and name != "resnet20":
        return "resnet"
    return name if name in FAMILIES else "none"


def lookup(policy: str, family: str, key: str):
    """A table value, for the lr_policy YAMLs' interpolations."""
    if policy not in POLICIES:
        raise ConfigError(f"GCP policy {policy!r} is not valid; choose norm, fast or adju")
    if family not in FAMILIES:
        raise ConfigError(f"lr_policy={policy} is defined for the {', '.join(FAMILIES)} backbones, not this one "
                         f"(family {family!r}); set lr_policy.family=resnet to borrow the ResNet policy")
    entry = TABLE[(family, policy)]
    return entry.get(key, False) if key == "per_iteration" else entry[key]


def gcp_policy(policy: str, family: str, base_lr: Positive, epochs: lr.Epochs, strict_paper: bool = True,
               per_iteration: bool = False, warmup_epochs: NonNeg = 0.0, warmup_start: Probability = 0.0,
               batch_size: Annotated[Optional[int], COUNT] = None,
               weight_decay: Annotated[Optional[float], NONNEG] = None) -> lr.LRSchedule:
    """The plain schedule behind (family, policy), with the configured base LR and epochs.
    ``batch_size`` and ``weight_decay`` are the recipe's; the YAML hands them to trainer/optimizer."""
    lookup(policy, family, "epochs")  # validates both names
    cls, kwargs = TABLE[(family, policy)]["schedule"]
    kwargs = dict(kwargs)
    if not strict_paper and "offset" in kwargs:
        kwargs["offset"] = 0.0
    return cls(base_lr=base_lr, epochs=epochs, per_iteration=per_iteration, warmup_epochs=warmup_epochs,
               warmup_start=warmup_start, **kwargs)
