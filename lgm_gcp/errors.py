"""The exception types of mistakes a user can fix.

Every entry point reports a ``UserError`` as one line on stderr (``<command>: error: <message>``)
and exits non-zero; any other exception is a bug in the library and keeps its traceback. The
subclasses also derive from the built-in type a caller would expect, so ``except ValueError`` and
``except FileNotFoundError`` keep working.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the command, the config or the files given: its message names the value or the
    file and what would be valid."""


class ConfigError(UserError, ValueError):
    """A configuration mistake: an unknown key or option, a value of the wrong type or out of range."""


class DatasetError(UserError, FileNotFoundError):
    """Missing, empty, truncated, undecodable or mislaid dataset files."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint or weights file that cannot be used: unreadable, truncated, from another config."""


class RunFolderError(UserError, RuntimeError):
    """A run folder that cannot be used: in use by a live run, not a folder, or unreadable files in it."""


class TrackerError(UserError, RuntimeError):
    """An experiment tracker (logger=mlflow, wandb, ...) that is not installed or cannot start a run."""


class ClusterError(UserError, RuntimeError):
    """A scheduler that refused a job (sbatch's own reason is in the message)."""


class NonFiniteError(UserError, FloatingPointError):
    """A non-finite loss or gradient: the step, the parameter and the last good checkpoint are named."""


def fail(prog: str, error: Exception, status: int = 1) -> None:
    """Report a user error as one line on stderr and exit with ``status``."""
    import sys

    words = str(error).split()  # one line, whatever the message held; absurdly long values shortened
    message = " ".join(w if len(w) <= 160 else f"{w[:60]}...({len(w)} characters)" for w in words)
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def one_line_parser(prog: str, description: str):
    """An argparse parser whose usage errors are one stderr line (``prog: error: ...``), exit 2."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message):
            fail(self.prog, f"{message} (see {self.prog} --help)", status=2)

    return _Parser(prog=prog, description=description)


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range: it must be >= 1")
    return value


def _number(text: str, valid, description: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not valid(value):
        raise argparse.ArgumentTypeError(f"{value} is out of range: it must be {description}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number > 0."""
    return _number(text, lambda v: v > 0, "> 0")


def unit_interval(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    return _number(text, lambda v: 0 <= v <= 1, "in [0, 1]")


def output_path(text: str):
    """An argparse type: a file or folder to write, whose parent folder exists."""
    import argparse
    from pathlib import Path

    path = Path(text)
    parent = path.resolve().parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: folder {parent} does not exist; create it first")
    return path
