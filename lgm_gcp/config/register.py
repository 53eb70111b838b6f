"""Registration, on top of the config layer: every option's schema into Hydra's ConfigStore, the metafiles'
preset source (``metafile://``) and the ``lgm_gcp.*`` resolvers. Nothing below imports this module.

An option YAML names its schema in its defaults list (``- /schema/head/covariance@_here_``); the schema
stored under that name is derived from the signature of the YAML's ``_target_`` (``derive.schema_of``),
so the class and its YAML are all an option is. Groups without a ``_target_`` class to read (the trainer)
and the root keep the hand-written dataclasses of ``schema.py``.
"""

from __future__ import annotations

import dataclasses
import functools
from importlib import resources
from pathlib import Path

import yaml
from hydra.core.config_store import ConfigStore

from lgm_gcp.config.metafile import register_presets
from lgm_gcp.config.resolvers import register_resolvers
from lgm_gcp.config.schema import HAND_SCHEMAS, ROOT_SCHEMA
from lgm_gcp.errors import ConfigError
from lgm_gcp.options.derive import schema_of
from lgm_gcp.options.groups import CALL_SITE, PARTIAL, TARGET_GROUPS
from lgm_gcp.options.instantiate import locate

SCHEMA_GROUPS = TARGET_GROUPS + ("logger",)


def _schema_names(group: str, data: dict) -> list:
    prefix = f"/schema/{group}/"
    return [d[len(prefix):].split("@")[0] for d in data.get("defaults") or []
            if isinstance(d, str) and d.startswith(prefix)]


def _targets(folder) -> dict:
    """(group, schema name) -> (the _target_ of the YAMLs that name it, the first such YAML) in ``folder``,
    a ``conf/`` tree. A YAML of a ``_global_`` package (the GCP LR policies) keeps its option under its group."""
    found: dict = {}
    for group in SCHEMA_GROUPS:
        if not folder.joinpath(group).is_dir():
            continue
        for path in sorted((p for p in folder.joinpath(group).iterdir() if p.name.endswith(".yaml")),
                           key=lambda p: p.name):
            data = yaml.safe_load(path.read_text()) or {}
            if not _schema_names(group, data):  # it would compose with no check of its keys, types or ranges
                raise ConfigError(f"{path} names no schema: add '- /schema/{group}/{path.stem}@_here_' to its "
                                  "defaults list, before _self_ (every option YAML extends its class's schema)")
            for name in _schema_names(group, data):
                if name in HAND_SCHEMAS.get(group, {}):
                    continue
                target = data.get("_target_") or (data.get(group) or {}).get("_target_")
                if not target:
                    raise ConfigError(f"{path} names /schema/{group}/{name} but sets no _target_; its schema "
                                      "is read from the _target_ class's signature")
                seen = found.setdefault((group, name), (target, path))
                if seen[0] != target:
                    raise ConfigError(f"{path} and {seen[1]} name one schema /schema/{group}/{name} for two "
                                      f"_target_s ({target}, {seen[0]}); give each class its own schema name")
    return found


def _derive(found: dict) -> dict:
    return {(group, name): schema_of(locate(target, group), CALL_SITE.get(group, ()), group in PARTIAL)
            for (group, name), (target, _) in found.items()}


@functools.lru_cache(maxsize=None)
def option_schemas() -> dict:
    """(group, name) -> schema of every option of the package's ``conf/`` and the hand-written ones."""
    derived = _derive(_targets(resources.files("lgm_gcp.conf")))
    derived.update({(group, name): node for group, nodes in HAND_SCHEMAS.items() for name, node in nodes.items()})
    return derived


def register_schemas(config_dir: str | None = None) -> None:
    """Store every schema as ``schema/<group>/<name>`` and the root as ``schema/root`` (with those of the
    YAMLs in ``config_dir``, a ``--config-dir`` folder, whose own classes get their schemas the same way);
    make the metafiles' presets' config source (``metafile://``) and the resolvers known to Hydra."""
    register_resolvers()
    register_presets()
    schemas = dict(option_schemas())
    if config_dir:
        schemas.update(_derive(_targets(Path(config_dir))))
    cs = ConfigStore.instance()
    for (group, name), node in schemas.items():
        cs.store(group=f"schema/{group}", name=name, node=node)
    cs.store(group="schema", name="root", node=ROOT_SCHEMA)


def resumable_keys() -> frozenset:
    """The dotted keys (``trainer.max_epochs``) and subtrees (``logger``) marked ``resumable``, in the
    root and any option's schema."""
    keys = {f.name for f in dataclasses.fields(ROOT_SCHEMA) if f.metadata.get("resumable")}
    for (group, _), schema in option_schemas().items():
        keys |= {f"{group}.{f.name}" for f in dataclasses.fields(schema) if f.metadata.get("resumable")}
    return frozenset(keys)
