"""Compose the config with Hydra's compose API and turn Hydra's errors into one line each.

Used by the console script before Hydra's own ``@hydra.main`` runs (so a bad override stops with
one line, sweeps included), by the torchrun path (which must not use ``@hydra.main``) and by tests.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import List, Sequence

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from lgm_gcp.config.metafile import SEARCH_PATH, with_generated
from lgm_gcp.config.register import register_schemas
from lgm_gcp.config.validate import ConfigError, field_names, validate
from lgm_gcp.options.groups import GROUPS

CONFIG_MODULE = "lgm_gcp.conf"


def group_options(group: str) -> List[str]:
    """The options of a group Hydra can compose. The loader lists the YAMLs of conf/ (and --config-dir),
    not the sources that conf/config.yaml's hydra.searchpath adds: the metafiles' presets join here."""
    return with_generated(group, GlobalHydra.instance().config_loader().get_group_options(group))


def _expected_type(object_type: type, key: str) -> str:
    if not dataclasses.is_dataclass(object_type):
        return "a valid value"
    hints = typing.get_type_hints(object_type)
    hint = hints.get(key)
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def _chosen(overrides: Sequence[str], group: str) -> List[str]:
    """The options of ``group`` chosen on the command line (``loss=lgm``), in order."""
    return [o.split("=", 1)[1] for o in overrides if "=" in o and o.split("=", 1)[0].lstrip("+~") == group]


def _preset_clash(cause: Exception, overrides: Sequence[str]) -> str | None:
    """A preset (``experiment=X``) that sets a key the group option chosen on the command line lacks:
    decided from the overrides and the failing key, not from Hydra's message text."""
    if not isinstance(cause, (ConfigKeyError, ConfigAttributeError)) or not cause.full_key:
        return None
    key = cause.full_key
    group = key.split(".", 1)[0]
    presets, chosen = _chosen(overrides, "experiment"), _chosen(overrides, group)
    if group not in GROUPS or not presets or not chosen:
        return None
    object_type = getattr(cause, "object_type", None)
    valid = ", ".join(field_names(object_type)) if dataclasses.is_dataclass(object_type) else "?"
    option = f"{group}={chosen[-1]}"
    return (f"experiment={presets[-1]} sets '{key}', which {option} does not have (its keys: {valid}); drop "
            f"{option} to keep the preset's {group}, or override the preset's keys")


def _yaml_line(exc: yaml.YAMLError) -> str:
    """A YAML file's syntax error or unsupported tag, with the file and line it sits at."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{mark.name}, line {mark.line + 1}" if mark is not None else "a config file"
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{where}: {problem} (configs are plain YAML: no tags that build Python objects)"


# keys users type where timm, torch or Lightning keep them, and where this config keeps them
KEYS_ELSEWHERE = {
    "optimizer.lr": ("lr_policy.base_lr", "the LR is the schedule's, at every step (the optimizer's recipe "
                     "sets it where the config says auto)"),
    "optimizer.warmup_epochs": ("lr_policy.warmup_epochs", "the warm-up is the schedule's"),
    "optimizer.min_lr": ("lr_policy.min_lr", "the final LR is the schedule's"),
    "trainer.lr": ("lr_policy.base_lr", "the LR is the schedule's"),
    "trainer.epochs": ("trainer.max_epochs", "the trainer's length is max_epochs"),
    "trainer.weight_decay": ("optimizer.weight_decay", "the weight decay is the optimizer's"),
}


def _one_line(exc: Exception, overrides: Sequence[str] = ()) -> str:
    chain = [exc]  # Hydra chains a preset's composition error as the context, not the cause
    while (chain[-1].__cause__ or chain[-1].__context__) is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    missing = next((e for e in chain if isinstance(e, MissingConfigException)), None)
    if missing is not None and missing.missing_cfg_file:  # an option a defaults list names (a preset's)
        group, _, bad = missing.missing_cfg_file.rpartition("/")
        valid = ", ".join(with_generated(group, missing.options or []))  # the search path's, --config-dir's too
        if group in GROUPS:
            return f"unknown {group} option '{bad}'; valid: {valid}"
        return f"no config '{missing.missing_cfg_file}' on the search path; valid: {valid}"
    # the OmegaConf error under Hydra's wrappers (the cause of a bad override, the context of a bad YAML)
    cause = next((e for e in chain if isinstance(e, OmegaConfBaseException)), chain[-1])
    clash = _preset_clash(cause, overrides)
    if clash:
        return clash
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        object_type = getattr(cause, "object_type", None)
        key = cause.full_key
        if key in KEYS_ELSEWHERE:
            home, why = KEYS_ELSEWHERE[key]
            value = next((o.split("=", 1)[1] for o in overrides if o.lstrip("+~").split("=", 1)[0] == key), "VALUE")
            return f"unknown key '{key}': {why}; set {home}={value}"
        if object_type is not None and dataclasses.is_dataclass(object_type):
            return f"unknown key '{key}' for {object_type.__name__}; valid keys: {', '.join(field_names(object_type))}"
        if object_type is dict and "." in key:  # a key new to a mapping field such as backbone.kwargs
            parent, leaf = key.rsplit(".", 1)
            return (f"unknown key '{key}': {parent} is a mapping, and Hydra adds a key to one with +, e.g. "
                    f"+{parent}.{leaf}=VALUE")
        return f"unknown key '{key}'"
    if isinstance(cause, ValidationError):
        object_type = getattr(cause, "object_type", None)
        key = cause.full_key
        leaf = key.rsplit(".", 1)[-1]
        return f"invalid value '{cause.value}' for '{key}': expected {_expected_type(object_type, leaf)}"
    if isinstance(exc, OverrideParseException):
        return f"cannot parse override: {str(exc).splitlines()[0]}"
    if isinstance(cause, OmegaConfBaseException):
        return str(cause).splitlines()[0]
    return str(exc).splitlines()[0]


def _first_values(overrides: Sequence[str], search_path: str | None = None) -> List[str]:
    """Check every value of each sweep that selects a group option; return one concrete job."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        bad = next((o for o in overrides if len(o) > 100), overrides[0] if overrides else "")
        raise ConfigError(f"cannot parse override '{bad}': {str(e).splitlines()[0]}") from None
    concrete = []
    for text, override in zip(overrides, parsed):
        group = override.key_or_group
        if not override.is_sweep_override():
            if group in GROUPS and not override.is_delete():  # before Hydra looks for <group>/<value>.yaml
                value = override.value()
                if value is None:
                    raise ConfigError(f"{text}: a group's option cannot be null; ~{group} leaves the group out")
                _check_options(group, value if isinstance(value, list) else [value], search_path)
            concrete.append(text)
            continue
        values = list(override.sweep_string_iterator())
        if group in GROUPS:
            _check_options(group, values, search_path)
        concrete.append(f"{override.get_key_element()}={values[0]}")
    return concrete


def _check_options(group: str, values: Sequence, search_path: str | None = None) -> None:
    """Each chosen option of ``group`` exists, in conf/, the metafiles or the ``--config-dir`` folder
    ``search_path``: one line naming the valid ones otherwise (a name of 100,000 characters too, which
    would otherwise reach the file system as a file name)."""
    known = group_options(group)
    if search_path:  # not yet on the loader's search path: Hydra adds it with the composing overrides
        known = sorted(set(known) | {p.stem for p in (Path(search_path) / group).glob("*.yaml")})
    for value in values:
        if isinstance(value, str) and value not in known:
            shown = f"'{value}'" if len(value) <= 60 else f"'{value[:40]}...' ({len(value):,} characters)"
            raise ConfigError(f"unknown {group} option {shown}; valid: {', '.join(known)}")


def sweep_safe(overrides: Sequence[str]) -> List[str]:
    """A multirun's overrides as Hydra can start them. Hydra composes the sweep's first config with
    the swept overrides left out, so ``lr_policy=norm,fast lr_policy.family=resnet`` fails there
    (the default lr_policy has no ``family``) although every job composes. An override of a key
    inside a swept group becomes a one-value sweep, ``lr_policy.family=choice(resnet)``: each job
    still gets it, and the sweep's first config does not need it."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # noqa: BLE001  preflight has already reported unparsable overrides
        return list(overrides)
    swept = {o.key_or_group for o in parsed if o.is_sweep_override() and o.key_or_group in GROUPS}
    out = []
    for text, override in zip(overrides, parsed):
        key = override.key_or_group
        inside = any(key.startswith(f"{group}.") for group in swept)
        if inside and not override.is_sweep_override() and override.package is None and text.startswith(key + "="):
            text = f"{key}=choice({text[len(key) + 1:]})"
        out.append(text)
    return out


def _config_dir(search_path: str | None) -> List[str]:
    """The override that adds a --config-dir folder; it replaces hydra.searchpath, so it keeps the
    metafiles' preset source that conf/config.yaml puts there."""
    return [f"hydra.searchpath=[file://{Path(search_path).resolve()},{SEARCH_PATH}]"] if search_path else []


def compose_with_choices(overrides: Sequence[str] = (), config_name: str = "config",
                         strict: bool = True, search_path: str | None = None) -> tuple:
    """Compose ``config_name`` with ``overrides`` (sweeps reduced to their first value) and validate.
    ``search_path``: a folder of extra YAMLs, as ``--config-dir`` gives Hydra.
    Returns (the job config, its config-group choices such as ``{"backbone": "resnet50"}``).

    Raises ConfigError with a one-line message on any mistake.
    """
    return _job_config(_compose_with_hydra(overrides, config_name, search_path), strict)


def compose_for_start(overrides: Sequence[str], search_path: str | None, multirun: bool) -> tuple:
    """lgm-gcp-train's composition before Hydra's: (the validated job config, and for a sweep its folder,
    ``hydra.sweep.dir`` resolved here, in the launching process, which claims it through ``unique_dir``; Hydra
    would resolve it again in every job process of a parallel launcher, where the claim would find the folder
    taken and make ``-1``, ``-2``, ... per job). ``@hydra.main`` then composes once more for itself: it takes
    no composed config, and it owns ``--cfg``, ``-m`` and the run folder; this composition is what gives one
    line for a mistake before Hydra writes anything."""
    cfg = _compose_with_hydra(overrides, "config", search_path)
    sweep_dir = str(cfg.hydra.sweep.dir) if multirun else None
    return _job_config(cfg, strict=True)[0], sweep_dir


def _compose_with_hydra(overrides: Sequence[str], config_name: str, search_path: str | None) -> DictConfig:
    GlobalHydra.instance().clear()
    concrete = [o for o in overrides if not o.startswith("hydra.")]
    if search_path and not Path(search_path).is_dir():
        raise ConfigError(f"--config-dir {search_path} is not a folder")
    extra = _config_dir(search_path)
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        try:
            register_schemas(search_path)
            concrete = _first_values(concrete, search_path)
            cfg = hydra_compose(config_name=config_name, overrides=concrete + extra, return_hydra_config=True)
        except ConfigError:
            raise
        except yaml.YAMLError as e:  # e.g. a --config-dir YAML with a !!python/object tag: never constructed
            raise ConfigError(_yaml_line(e)) from e
        except (ConfigCompositionException, MissingConfigException, OverrideParseException,
                OmegaConfBaseException) as e:
            raise ConfigError(_one_line(e, concrete)) from e
    return cfg


def _job_config(cfg: DictConfig, strict: bool) -> tuple:
    """(the job config without its ``hydra`` node, validated if ``strict``; the group choices)."""
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith(("hydra", "schema"))}
    with open_dict(cfg):
        del cfg["hydra"]
    if strict:
        validate(cfg)
    return cfg, choices


def compose(overrides: Sequence[str] = (), config_name: str = "config", strict: bool = True,
            search_path: str | None = None) -> DictConfig:
    """The job config of ``compose_with_choices``."""
    return compose_with_choices(overrides, config_name, strict, search_path)[0]
