"""The strict pass after composition: what Hydra's structured configs let through.

Hydra rejects ``trainer.max_epoch=3`` and ``trainer.max_epochs=three`` itself, but it accepts keys
appended with ``+``/``++`` even on a dataclass-typed node and only notices ``???`` values when they
are read. This walk closes both gaps, so every mistake stops at start-up with one line.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Tuple

from omegaconf import DictConfig, ListConfig, OmegaConf

from lgm_gcp.errors import ConfigError
from lgm_gcp.options.groups import TARGET_GROUPS
from lgm_gcp.options.instantiate import locate


def _typed_nodes(node: Any, path: str = "") -> Iterator[Tuple[str, DictConfig, type]]:
    if isinstance(node, DictConfig):
        object_type = OmegaConf.get_type(node)
        if dataclasses.is_dataclass(object_type):
            yield path, node, object_type
        for key in node.keys():
            if OmegaConf.is_missing(node, key):
                continue
            child = node._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)):
                yield from _typed_nodes(child, f"{path}.{key}" if path else str(key))


def field_names(object_type: type) -> list:
    return [f.name for f in dataclasses.fields(object_type)]


def validate(cfg: DictConfig, allow_extra: bool | None = None) -> None:
    """Raise ConfigError for unknown keys under schema-backed nodes, values left ``???`` and
    interpolations that cannot be resolved (e.g. a GCP policy for a backbone outside its families)."""
    try:
        _validate(cfg, allow_extra)
    except ConfigError:
        raise
    except Exception as e:
        chain = [e]  # OmegaConf chains a resolver's error as the context
        while (chain[-1].__cause__ or chain[-1].__context__) is not None:
            chain.append(chain[-1].__cause__ or chain[-1].__context__)
        own = next((c for c in chain if isinstance(c, ConfigError)), None)
        if own is not None:  # a resolver's own one line (a GCP policy outside its families)
            raise ConfigError(str(own)) from e
        cause = e
        while cause.__cause__ is not None:
            cause = cause.__cause__
        key = getattr(e, "full_key", "") or "the config"
        raise ConfigError(f"cannot resolve {key}: {str(cause).splitlines()[0]}") from e


def _validate(cfg: DictConfig, allow_extra: bool | None) -> None:
    if allow_extra is None:
        allow_extra = bool(OmegaConf.select(cfg, "trainer.allow_extra", default=False))
    if not allow_extra:
        for path, node, object_type in _typed_nodes(cfg):
            valid = field_names(object_type)
            for key in node.keys():
                if key not in valid:
                    where = f"{path}.{key}" if path else str(key)
                    raise ConfigError(
                        f"unknown key '{where}' for {object_type.__name__}; valid keys: {', '.join(valid)}"
                        " (set trainer.allow_extra=true to add keys on purpose)"
                    )
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing value for {', '.join(repr(k) for k in missing)}: set it on the command line")
    OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"]), resolve=True)
    check_ranges(cfg)
    check_lengths(cfg)
    check_run(cfg)
    check_composition(cfg)


MAX_VALUE_CHARS = 4096  # PATH_MAX on Linux: no path, name or option of a config is longer


def check_lengths(cfg: DictConfig) -> None:
    """A string value longer than any path (a pasted file, a runaway shell expansion) stops here with
    one line, not as an OSError from the first ``stat`` of it."""
    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
        elif isinstance(node, str) and len(node) > MAX_VALUE_CHARS:
            raise ConfigError(f"{path}='{node[:40]}...' has {len(node):,} characters; a value is at most "
                              f"{MAX_VALUE_CHARS} (a path's longest)")

    walk(OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"]), resolve=True), "")


def check_run(cfg: DictConfig) -> None:
    """What a run needs beyond each value's own range: ``eval.only`` evaluates the weights of a file, one
    evaluation protocol and one starting file are chosen, and the landscape probe's step sizes run from a to
    b >= a >= 0."""
    if OmegaConf.select(cfg, "eval.only", default=False) and not OmegaConf.select(cfg, "weights", default=None):
        raise ConfigError("eval.only=true evaluates the weights of a file: give weights=FILE")
    if OmegaConf.select(cfg, "eval.ten_crop", default=False) and OmegaConf.select(cfg, "eval.mirror", default=False):
        raise ConfigError("eval.ten_crop=true and eval.mirror=true: choose one evaluation (ten crops, or the centre "
                          "crop and its mirror)")
    if OmegaConf.select(cfg, "weights", default=None) and OmegaConf.select(cfg, "finetune", default=None):
        raise ConfigError("weights=FILE and finetune=FILE: choose one (weights fills the whole network strictly; "
                          "finetune fills the backbone and head and starts a new classifier)")
    low_high = list(OmegaConf.select(cfg, "trainer.landscape_range", default=[0, 0]))
    if len(low_high) != 2 or not 0 <= low_high[0] <= low_high[1]:
        raise ConfigError(f"trainer.landscape_range={low_high} must be [a, b] with 0 <= a <= b")


def check_composition(cfg: DictConfig) -> None:
    """What an option cannot be composed with, as the option's class declares it: a ``check_composition``
    classmethod, given the resolved config, raises ConfigError with its reason (``ThreeGHead``: L-GM's pull
    terms, measured not to train there)."""
    resolved = None
    for group in TARGET_GROUPS:
        target = OmegaConf.select(cfg, f"{group}._target_", default=None)
        check = getattr(locate(target, group), "check_composition", None) if isinstance(target, str) else None
        if check is not None:
            if resolved is None:
                resolved = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]),
                                                  resolve=True)
            check(resolved)


def check_ranges(cfg: DictConfig) -> None:
    """Every numeric field whose schema declares a ``Range`` (counts >= 1, rates >= 0, probabilities
    in [0, 1], ...) must hold a value inside it; ``None`` and strings such as ``auto`` are skipped.
    Values set directly are checked before interpolated ones, so the message names the key the user
    set (``trainer.max_epochs=0``), not one that copies it (``lr_policy.epochs``)."""
    for interpolated in (False, True):
        _check_ranges(cfg, interpolated)


def _check_ranges(cfg: DictConfig, interpolated: bool) -> None:
    for path, node, object_type in _typed_nodes(cfg):
        for f in dataclasses.fields(object_type):
            rng, options = f.metadata.get("range"), f.metadata.get("choices")
            if (rng is None and options is None) or f.name not in node \
                    or OmegaConf.is_interpolation(node, f.name) != interpolated:
                continue
            value = node[f.name]
            key = f"{path}.{f.name}" if path else f.name
            if options is not None:
                if value not in options:
                    shown = ", ".join(str(o).lower() if isinstance(o, bool) else str(o) for o in options)
                    raise ConfigError(f"{key}={value} is not valid; choose one of {shown}")
                continue
            if isinstance(value, str) and f.metadata.get("auto") and value != "auto":
                raise ConfigError(f"{key}={value} is not valid; give a number {rng.describe()}, or auto")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not rng.holds(value):
                raise ConfigError(f"{key}={value} is out of range: it must be {rng.describe()}")
