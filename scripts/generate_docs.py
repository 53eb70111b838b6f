"""Write the generated blocks of README.md and docs/*.md, so no table there is copied by hand:

* ``<!-- metafile: NAME ... -->`` ... ``<!-- end metafile -->``: NAME's released-weights table (conf/metafile/);
* ``<!-- include: PATH table N [+ PATH table M] ... -->`` ... ``<!-- end include -->``: the N-th markdown
  table of docs/PATH (a measured result kept in docs/results/), the rows of further tables appended;
* ``<!-- groups ... -->`` ... ``<!-- end groups -->``: the config groups and their options, read from conf/.

    python scripts/generate_docs.py [--check]   # --check: exit 1 if a block differs from its source
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from lgm_gcp.analysis.metafile import released_weights_table
from lgm_gcp.config.metafile import generated_presets, load_metafile
from lgm_gcp.markdown import markdown_table
from lgm_gcp.options.groups import GROUPS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONF = ROOT / "conf"


def _block(kind: str) -> re.Pattern:
    """``<!-- kind: ARGS -->`` (its first line, kept) ... ``<!-- end kind -->``."""
    return re.compile(rf"(<!-- {kind}\b([^>]*)-->\n)((?:(?!<!-- {kind}\b).)*?)(\n?<!-- end {kind} -->)", re.S)


def markdown_tables(text: str) -> list:
    """The markdown tables of ``text``: runs of lines starting with ``|``."""
    return [m.group(0).rstrip("\n") for m in re.finditer(r"(?:^\|.*\n?)+", text, re.M)]


def included_table(args: str) -> str:
    """``: PATH table N`` or ``: PATH table N + PATH table M ...``: the tables' rows under the first header."""
    parts = re.findall(r"(\S+)\s+table\s+(\d+)", args.split("(")[0].lstrip(" :"))
    tables = [markdown_tables((DOCS / path).read_text())[int(number) - 1].split("\n") for path, number in parts]
    return "\n".join(tables[0] + [row for table in tables[1:] for row in table[2:]])


def groups_table() -> str:
    """Each group's options, as conf/ holds them; the experiment group adds the metafiles' presets."""
    rows = []
    for group in GROUPS:
        options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
        text = ", ".join(f"`{o}`" for o in options)
        if group == "experiment":
            presets = generated_presets()
            text = (f"{len(presets)} paper presets, one per metafile row (`{presets[0]}`, …, `{presets[-1]}`), "
                    f"and {text}; `lgm-gcp-train --help` lists them all")
        rows.append([f"`{group}`", text])
    return markdown_table(["group", "options"], rows)


def regenerate(text: str) -> str:
    text = _block("metafile").sub(lambda m: m.group(1) + released_weights_table(
        load_metafile(re.match(r"\s*:\s*(\w+)", m.group(2)).group(1))) + "\n<!-- end metafile -->", text)
    text = _block("include").sub(lambda m: m.group(1) + included_table(m.group(2)) + "\n<!-- end include -->", text)
    return _block("groups").sub(lambda m: m.group(1) + groups_table() + "\n<!-- end groups -->", text)


def pages() -> list:
    return [ROOT / "README.md"] + sorted(DOCS.glob("*.md"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    stale = []
    for path in pages():
        text = path.read_text()
        new = regenerate(text)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        sys.exit(f"out of date with their sources: {', '.join(map(str, stale))}; run scripts/generate_docs.py")


if __name__ == "__main__":
    main()
