"""A paper's metafile (``conf/metafile/<paper>.yaml``, after mmpretrain's ``metafile.yml``, but executed):
one row per experiment preset with its published numbers and released weight file, written once.

The preset names the row's config-group choices (its ``override /<group>: <option>`` defaults), so a
table places each published number by the same labels it gives runs; ``released_weights_table`` writes
the released-weights table of ``docs/weights.md`` (``scripts/metafile_docs.py``).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from lgm_gcp.errors import ConfigError
from lgm_gcp.markdown import markdown_table


def _conf(*parts: str):
    return resources.files("lgm_gcp.conf").joinpath(*parts)


def load_metafile(name: str) -> dict:
    path = _conf("metafile", f"{name}.yaml")
    if not path.is_file():
        known = sorted(p.name[:-5] for p in _conf("metafile").iterdir() if p.name.endswith(".yaml"))
        raise ConfigError(f"unknown metafile '{name}'; valid: {', '.join(known)}")
    return yaml.safe_load(path.read_text())


def preset_choices(preset: str) -> dict:
    """{group: option} of an experiment preset's ``override /<group>: <option>`` defaults."""
    path = _conf("experiment", f"{preset}.yaml")
    if not path.is_file():
        raise ConfigError(f"metafile row {preset}: no preset conf/experiment/{preset}.yaml")
    choices = {}
    for entry in yaml.safe_load(path.read_text()).get("defaults", []):
        if isinstance(entry, dict):
            for key, option in entry.items():
                choices[key.removeprefix("override ").strip("/")] = option
    return choices


def published_cells(meta: dict, rows, columns) -> dict[str, dict[str, Any]]:
    """{row label: {column label: published}} for a table whose axes (``keys`` -> ``labels``) are
    config-group choices."""
    cells: dict[str, dict[str, Any]] = {}
    for row in meta["rows"]:
        choices = preset_choices(row["preset"])

        def label(axis, preset=row["preset"], choices=choices):
            missing = [k for k in axis.keys if k not in choices]
            if missing:
                raise ConfigError(f"metafile row {preset}: the preset sets no {', '.join(missing)} choice")
            return axis.labels.get(",".join(str(choices[k]) for k in axis.keys))

        r, c = label(rows), label(columns)
        if r is not None and c is not None:
            cells.setdefault(r, {})[c] = row["published"]
    return cells


def released_weights_table(meta: dict) -> str:
    """``lgm-gcp-eval FILE experiment=PRESET`` and the published numbers, one line per released file."""
    rows = [[f"`lgm-gcp-eval {r['released']} experiment={r['preset']}`", " / ".join(f"{v:.2f}" for v in r["published"])]
            for r in meta["rows"] if r.get("released")]
    return markdown_table(["command", "published top-1 / top-5"], rows)
