"""The one markdown-table writer every table of the package, its scripts and benchmarks uses."""

from __future__ import annotations

from typing import Any, Iterable, Sequence


def markdown_row(cells: Sequence[Any]) -> str:
    """``| a | b |`` (for tables printed a row at a time, as the benchmarks do)."""
    return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"


def markdown_header(header: Sequence[Any]) -> str:
    """The header row and its ``|---|`` rule."""
    return markdown_row(header) + "\n" + "|---" * len(header) + "|"


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """``| a | b |``, ``|---|---|``, then one line per row (cells as ``str()`` gives them), no trailing
    newline. A row shorter than the header is padded with empty cells; a longer one is an error."""
    lines = [markdown_header(header)]
    for row in rows:
        if len(row) > len(header):
            raise ValueError(f"a row of {len(row)} cells under a header of {len(header)}: {row}")
        lines.append(markdown_row([*row, *[""] * (len(header) - len(row))]))
    return "\n".join(lines)
