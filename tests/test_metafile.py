"""The paper metafiles (conf/metafile/): every published number of a paper written once, placed in its
table by the presets' own config-group choices and written into docs/ by scripts/metafile_docs.py."""

import importlib.util
from pathlib import Path

import pytest

from lgm_gcp.analysis.metafile import load_metafile, preset_choices
from lgm_gcp.analysis.table import load_table
from lgm_gcp.config.compose import compose_with_choices
from lgm_gcp.errors import ConfigError

from conftest import CONF, conf_options

ROOT = Path(__file__).resolve().parents[1]


def test_the_gcp_study_metafile_has_one_row_per_gcp_preset():
    rows = [r["preset"] for r in load_metafile("gcp_study")["rows"]]
    assert sorted(rows) == [p for p in conf_options("experiment") if p.startswith("gcp_")] and len(set(rows)) == 40


@pytest.mark.parametrize("row", load_metafile("gcp_study")["rows"], ids=lambda r: r["preset"])
def test_each_row_lands_in_its_table_cell_by_the_choices_hydra_composes(row):
    """The metafile reads a preset's choices from its defaults list; they must be the ones Hydra
    composes, and the table must hold the row's numbers at the labels those choices get."""
    table = load_table("gcp_imagenet")
    _, choices = compose_with_choices([f"experiment={row['preset']}"])
    parsed = preset_choices(row["preset"])
    assert {k: choices[k] for k in parsed} == parsed
    r = table.rows.labels[",".join(choices[k] for k in table.rows.keys)]
    c = table.columns.labels[",".join(choices[k] for k in table.columns.keys)]
    assert table.published[r][c] == row["published"]


def test_docs_blocks_are_what_the_metafiles_generate():
    spec = importlib.util.spec_from_file_location("metafile_docs", ROOT / "scripts" / "metafile_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for path in sorted((ROOT / "docs").glob("*.md")):
        assert module.regenerate(path.read_text()) == path.read_text(), f"{path}: run scripts/metafile_docs.py"
    text = (ROOT / "docs" / "weights.md").read_text()
    released = [r for r in load_metafile("gcp_study")["rows"] if r.get("released")]
    assert len(released) == 40  # every row, each its own line of the block: an empty block cannot pass
    assert all(f"lgm-gcp-eval {r['released']} experiment={r['preset']}`" in text for r in released)


def test_an_unknown_metafile_is_one_line_and_the_table_keeps_no_second_copy():
    with pytest.raises(ConfigError, match="unknown metafile 'nope'; valid: gcp_study"):
        load_metafile("nope")
    assert (CONF / "table" / "gcp_imagenet.yaml").read_text().count("published:") == 0
