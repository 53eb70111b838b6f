"""What the tables and the docs read from a paper's metafile (``lgm_gcp/config/metafile.py`` reads the
file and composes its presets).

A row's preset names its config-group choices, so a table places each published number by the same
labels it gives runs; ``released_weights_table`` writes the released-weights tables of
``docs/weights.md`` (``scripts/generate_docs.py``).
"""

from __future__ import annotations

from typing import Any

from lgm_gcp.config.metafile import preset_choices
from lgm_gcp.errors import ConfigError
from lgm_gcp.markdown import markdown_table


def row_published(meta: dict, row: dict, metrics: list) -> Any:
    """A row's published numbers of ``metrics``: its ``published`` for the metafile's ``metrics``, or the
    entry of its ``results`` list (mmpretrain's shape: one entry per task, e.g. ImageNet-C/P) that reports
    exactly those metrics; None where the row has none."""
    if list(metrics) == list(meta["metrics"]):
        return row.get("published")
    return next((r["published"] for r in row.get("results", []) if list(r["metrics"]) == list(metrics)), None)


def table_metrics(table) -> list:
    """The metrics a table reports, in its order: what a row's published numbers must be for it."""
    return [table.metric] + ([table.second_metric] if table.second_metric else []) + list(table.extra_metrics)


def published_cells(meta: dict, table) -> dict[str, dict[str, Any]]:
    """{row label: {column label: published}} for a table whose axes (``keys`` -> ``labels``) and
    ``select`` are config-group choices: each row with a number of the table's metrics lands where a run
    of its preset would (a ``place`` row, with no preset, where its choices say)."""
    metrics = table_metrics(table)
    cells: dict[str, dict[str, Any]] = {}
    for row in meta["rows"]:
        published = row_published(meta, row, metrics)
        if published is None:
            continue
        choices = row["place"] if "place" in row else preset_choices(row["preset"])
        if any(key in choices and str(choices[key]) != str(value) for key, value in table.select.items()):
            continue

        name = row.get("preset", row.get("name"))

        def label(axis, preset=name, choices=choices):
            missing = [k for k in axis.keys if k not in choices]
            if missing:
                raise ConfigError(f"metafile row {preset}: the preset sets no {', '.join(missing)} choice")
            return axis.labels.get(",".join(str(choices[k]) for k in axis.keys))

        r, c = label(table.rows), label(table.columns)
        if r is not None and c is not None:
            cells.setdefault(r, {})[c] = published
    return cells


def released_weights_table(meta: dict) -> str:
    """``lgm-gcp-eval FILE experiment=PRESET`` and the published numbers, one line per released file."""
    names = " / ".join(m.removeprefix("test_").replace("top", "top-") for m in meta["metrics"])
    header = f"published {names}" + (" error" if meta.get("error") else "")
    rows = [[f"`lgm-gcp-eval {r['released']} experiment={r['preset']}`",
             " / ".join(f"{v:.2f}" for v in r["published"]) + (f" ({r['protocol']})" if r.get("protocol") else "")]
            for r in meta["rows"] if r.get("released")]
    return markdown_table(["command", header], rows)
