"""Registration, on top of the config layer: the schemas into Hydra's ConfigStore, the metafiles' preset
source (``metafile://``) and the ``lgm_gcp.*`` resolvers. Nothing below imports this module."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from lgm_gcp.config.metafile import register_presets
from lgm_gcp.config.resolvers import register_resolvers
from lgm_gcp.config.schema import SCHEMAS, RootConfig


def register_schemas() -> None:
    """Store every schema as ``schema/<group>/<name>`` and the root as ``schema/root``; make the metafiles'
    presets' config source (``metafile://``) and the resolvers known to Hydra."""
    register_resolvers()
    register_presets()
    cs = ConfigStore.instance()
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
    cs.store(group="schema", name="root", node=RootConfig)
