"""A paper's metafile (``conf/metafile/<paper>.yaml``, after mmpretrain's ``metafile.yml``, but executed).

One row per experiment, written once: its preset name, its config-group choices, the named parts of its
recipe, the reference network's fingerprint (model function, trainable parameters), the published
numbers and the released weight file.

A row with ``choices`` *is* its experiment preset: the ``metafile://`` config source (``MetafilePresets``,
on the search path of conf/config.yaml) serves it as ``experiment/<preset>`` (package ``_global_``), so
``experiment=<preset>`` composes it exactly as a YAML preset would::

    node = {defaults: [{override /<group>: <option>} for preset.choices | part.choices ... | row.choices],
            **merge(preset.config, part.config for part in row.parts),
            reference: merge(preset.reference, part.reference ..., {parameters: row.parameters})}

with ``reference.source`` formatted by the choices, the merged ``vars`` and ``{model}``. A row's ``model``
and ``parameters`` may come from the file's ``networks.<backbone>.<head>``, written once per pair. A part may set
choices of its own, so one paper's ImageNet and CIFAR recipes are two parts of one file. A row without
``choices`` names a preset defined elsewhere: another metafile's row or a YAML in ``conf/experiment/``.

A row with ``place`` instead of ``preset`` is a published number that no preset here reproduces (a model part
lgm-gcp does not build, or a recipe it does not run): ``name`` labels it, ``place`` gives the config-group
choices a table places it by, and ``note`` says what is missing. It composes nothing.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources

import yaml
from hydra.core.object_type import ObjectType
from hydra.core.plugins import Plugins
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from omegaconf import OmegaConf

from lgm_gcp.config.validate import ConfigError
from lgm_gcp.options.groups import GROUPS

ROW_KEYS = ("preset", "choices", "parts", "model", "parameters", "published", "results", "released", "protocol")
PLACED_ROW_KEYS = ("name", "place", "note", "model", "published", "results")


def _conf(*parts: str):
    return resources.files("lgm_gcp.conf").joinpath(*parts)


def metafile_names() -> list:
    return sorted(p.name[:-5] for p in _conf("metafile").iterdir() if p.name.endswith(".yaml"))


@functools.lru_cache(maxsize=None)
def _read(name: str) -> dict:
    return yaml.safe_load(_conf("metafile", f"{name}.yaml").read_text())


def load_metafile(name: str) -> dict:
    if not _conf("metafile", f"{name}.yaml").is_file():
        raise ConfigError(f"unknown metafile '{name}'; valid: {', '.join(metafile_names())}")
    return copy.deepcopy(_read(name))


def merge(base: dict, extra: dict) -> dict:
    """``base`` updated by ``extra``, nested dicts merged key by key (lists and scalars replaced)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else copy.deepcopy(value)
    return out


def row_choices(meta: dict, row: dict) -> dict:
    """{group: option} of a generated row: the paper's shared choices, its parts' in order, then the row's."""
    choices = dict(meta.get("preset", {}).get("choices", {}))
    for part in row.get("parts", []):
        choices.update(meta.get("parts", {}).get(part, {}).get("choices", {}))
    return {**choices, **row["choices"]}


def preset_node(name: str, meta: dict, row: dict) -> dict:
    """The experiment preset a metafile row composes (see the module docstring)."""
    where = f"metafile {name}, row {row['preset']}"
    choices = row_choices(meta, row)
    unknown = sorted(set(choices) - set(GROUPS))
    if unknown:
        raise ConfigError(f"{where}: {', '.join(unknown)} is not a config group; valid: {', '.join(GROUPS)}")
    shared, parts = meta.get("preset", {}), meta.get("parts", {})
    _check_keys(where, row, ROW_KEYS)
    _check_keys(f"metafile {name}, preset", shared, ("choices", "vars", "config", "reference"))
    config, reference = shared.get("config", {}), shared.get("reference", {})
    network = meta.get("networks", {}).get(choices.get("backbone"), {}).get(choices.get("head"), {})
    model, parameters = row.get("model", network.get("model")), row.get("parameters", network.get("parameters"))
    if parameters is None:
        raise ConfigError(f"{where}: no parameter count; give the row's parameters or "
                          f"networks.{choices.get('backbone')}.{choices.get('head')}")
    variables = {**shared.get("vars", {}), **choices, "model": model}
    for part in row.get("parts", []):
        if part not in parts:
            raise ConfigError(f"{where}: unknown part '{part}'; valid: {', '.join(parts)}")
        _check_keys(f"metafile {name}, part {part}", parts[part], ("choices", "vars", "config", "reference"))
        config = merge(config, parts[part].get("config", {}))
        reference = merge(reference, parts[part].get("reference", {}))
        variables.update(parts[part].get("vars", {}))
    reference = merge(reference, {"parameters": parameters})
    try:
        reference["source"] = reference["source"].format(**variables)
    except KeyError as exc:
        raise ConfigError(f"{where}: reference.source names {{{exc.args[0]}}}, which no vars entry sets") from None
    defaults = [{f"override /{group}": option} for group, option in sorted(choices.items(), key=_group_order)]
    return {"defaults": defaults, **config, "reference": reference}


def _check_keys(where: str, block: dict, valid) -> None:
    unknown = sorted(set(block) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown key {', '.join(unknown)}; valid: {', '.join(valid)}")


def _group_order(item) -> int:
    return GROUPS.index(item[0])


def generated_rows() -> dict:
    """{preset: (metafile name, metafile, row)} for every row that is its own preset."""
    rows = {}
    for name in metafile_names():
        meta = _read(name)
        for row in meta.get("rows", []):
            if "place" in row:
                _check_keys(f"metafile {name}, row {row.get('name')}", row, PLACED_ROW_KEYS)
            elif "choices" in row:
                rows[row["preset"]] = (name, meta, row)
    return rows


def generated_presets() -> list:
    return sorted(generated_rows())


def with_generated(group: str, options) -> list:
    """A group's YAML options, and for ``experiment`` the generated presets too, sorted: what a user
    may choose (Hydra's loader and conf/'s folders know only the YAMLs)."""
    return sorted(set(options) | (set(generated_rows()) if group == "experiment" else set()))


SEARCH_PATH = "metafile://lgm_gcp.conf"  # conf/config.yaml's hydra.searchpath entry


class MetafilePresets(ConfigSource):
    """The metafiles' generated presets as a Hydra config source, ``experiment/<preset>`` composed on
    demand by ``preset_node``. Not the ConfigStore: Hydra deep-copies the whole store on every compose
    and on every group listing (``--help`` lists 150), and 50 preset nodes made that 0.3 s a copy."""

    @staticmethod
    def scheme() -> str:
        return "metafile"

    def available(self) -> bool:
        return True

    def _preset(self, config_path: str):
        group, _, file = self._normalize_file_name(config_path.strip("/")).rpartition("/")
        return generated_rows().get(file[:-len(".yaml")]) if group == "experiment" else None

    def load_config(self, config_path: str) -> ConfigResult:
        row = self._preset(config_path)
        if row is None:
            raise ConfigLoadError(f"no generated preset {config_path}")
        return ConfigResult(config=OmegaConf.create(preset_node(*row)), path=self.full_path(),
                            provider=self.provider, header={"package": "_global_"})

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") in ("", "experiment")

    def is_config(self, config_path: str) -> bool:
        return self._preset(config_path) is not None

    def list(self, config_path: str, results_filter) -> list:
        path = config_path.strip("/")
        if path == "":
            return ["experiment"] if results_filter in (None, ObjectType.GROUP) else []
        if path != "experiment" or results_filter == ObjectType.GROUP:
            return []
        return generated_presets()


def register_presets() -> None:
    """Make the ``metafile://`` source known to Hydra (conf/config.yaml puts it on the search path);
    refuse a preset that is both a metafile row and a YAML."""
    Plugins.instance().register(MetafilePresets)  # a ConfigSource plugin: Hydra registers its scheme
    for preset, (name, _, _) in generated_rows().items():
        if _conf("experiment", f"{preset}.yaml").is_file():
            raise ConfigError(f"preset {preset} is defined twice: in conf/metafile/{name}.yaml and "
                              f"conf/experiment/{preset}.yaml; keep one")


def _defaults_choices(path) -> dict:
    """{group: option} of a YAML config's defaults list (``group: option`` and ``override /group: option``)."""
    choices = {}
    for entry in yaml.safe_load(path.read_text()).get("defaults", []):
        if isinstance(entry, dict):
            for key, option in entry.items():
                group = key.removeprefix("override ").strip("/")
                if group in GROUPS and isinstance(option, str):
                    choices[group] = option
    return choices


def preset_choices(preset: str) -> dict:
    """{group: option} an experiment preset composes: conf/config.yaml's defaults, overridden by a generated
    row's choices or by a YAML preset's ``override /<group>: <option>`` defaults."""
    choices = _defaults_choices(_conf("config.yaml"))
    generated = generated_rows().get(preset)
    if generated:
        return {**choices, **row_choices(generated[1], generated[2])}
    path = _conf("experiment", f"{preset}.yaml")
    if not path.is_file():
        raise ConfigError(f"no experiment preset {preset}: neither a metafile row nor conf/experiment/{preset}.yaml")
    return {**choices, **_defaults_choices(path)}
