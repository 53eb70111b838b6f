"""Write the generated blocks of docs/ from the metafiles (conf/metafile/): each block between
``<!-- metafile: NAME ... -->`` and ``<!-- end metafile -->`` becomes NAME's released-weights table.

    python scripts/metafile_docs.py [--check]   # --check: exit 1 if a block differs from its metafile
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from lgm_gcp.analysis.metafile import released_weights_table
from lgm_gcp.config.metafile import load_metafile

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"(<!-- metafile: (\w+)[^>]*-->\n)((?:(?!<!-- metafile:).)*?)(\n?<!-- end metafile -->)", re.S)


def regenerate(text: str) -> str:
    def table(match: re.Match) -> str:
        return match.group(1) + released_weights_table(load_metafile(match.group(2))) + "\n<!-- end metafile -->"
    return BLOCK.sub(table, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    stale = []
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text()
        new = regenerate(text)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        sys.exit(f"out of date with their metafiles: {', '.join(map(str, stale))}; run scripts/metafile_docs.py")


if __name__ == "__main__":
    main()
