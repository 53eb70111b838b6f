"""Reading weight files as the four reference repositories and lgm-gcp wrote them, and the converter.

Every read is ``torch.load(weights_only=True, map_location="cpu")``: the references saved on CUDA, in
the legacy (non-zip) format or the zip one, as a dict with ``state_dict`` (GCP_Optimization, 3G-Net,
fast-MPN-COV's ``main.py``, LargeMarginInSoftmax) or as a bare state dict (fast-MPN-COV's model zoo,
torchvision), with ``module.`` prefixes as a prefix or inside a key (``features.module.0.weight``).
A file weights_only refuses (LargeMarginInSoftmax pickles an ``argparse.Namespace`` beside the
weights) is refused in one line that names the converter:

    lgm-gcp-convert checkpoint-epoch120.pth.tar converted.pth

which loads it with an allow-list of harmless types (``argparse.Namespace``) and writes the state
dict alone: a plain ``{name: tensor}`` file, ``module.`` prefixes removed.
"""

from __future__ import annotations

import argparse
import pickle
import re
import sys
from pathlib import Path
from typing import Any, Mapping

import torch

from lgm_gcp.errors import CheckpointError, UserError, fail, one_line_parser, output_path

HARMLESS = [argparse.Namespace]  # what the converter lets through besides tensors and containers
PROG = "lgm-gcp-convert"


def read_file(path: str | Path, allow: list | None = None) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        with torch.serialization.safe_globals(allow or []):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found is None:
            raise CheckpointError(f"{path} is not a readable torch checkpoint ({str(e).splitlines()[0]})") from None
        raise CheckpointError(f"{path} holds {found.group(1)} beside its tensors, which weights_only loading "
                              f"refuses; convert it once with: {PROG} {path} <new file>") from None
    except Exception as e:  # torch's unpickler raises whatever a garbage file trips (IndexError, KeyError, ...)
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({str(e).splitlines()[0]})") from None


def read_safetensors(path: Path) -> dict:
    """A ``.safetensors`` file (timm's and the Hugging Face hub's format): tensors only, nothing executed."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise CheckpointError(f"{path}: reading .safetensors needs the safetensors package (pip install "
                              "safetensors; timm installs it)") from None
    try:
        return load_file(path, device="cpu")
    except Exception as e:  # safetensors raises its own SafetensorError on a damaged header
        raise CheckpointError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0]})") from None


def state_dict_of(obj: Any, path: str | Path = "the file") -> dict:
    """The tensors of a checkpoint object: its ``state_dict`` (references), ``model`` (lgm-gcp run
    checkpoints) or the object itself, with every ``module.`` removed."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict (a mapping of names to tensors, possibly under "
                              "'state_dict' or 'model')")
    return {strip_module(k): v for k, v in obj.items()}


def strip_module(key: str) -> str:
    """``module.features.module.0.weight`` -> ``features.0.weight`` (DataParallel / DDP wrappers)."""
    return re.sub(r"(^|\.)module\.", r"\1", key)


def read_state_dict(path: str | Path) -> dict:
    return state_dict_of(read_file(path), path)


def convert(source: str | Path, target: str | Path) -> int:
    """Load ``source`` with the allow-list, write its state dict alone to ``target``; returns the
    number of tensors."""
    state = state_dict_of(read_file(source, allow=HARMLESS), source)
    torch.save(state, target)
    return len(state)


def cli(argv=None) -> None:
    parser = one_line_parser(PROG, description="Rewrite a checkpoint that weights_only loading refuses (e.g. "
                             "LargeMarginInSoftmax's, with an argparse.Namespace) as a plain state dict.")
    parser.add_argument("source", help="the checkpoint to convert")
    parser.add_argument("target", type=output_path, help="where to write the state dict (must not exist)")
    args = parser.parse_args(argv)
    try:
        if Path(args.target).exists():
            raise CheckpointError(f"{args.target} exists; choose a new file name (nothing is overwritten)")
        n = convert(args.source, args.target)
    except UserError as e:
        fail(PROG, e)
    print(f"{args.target}: {n} tensors from {args.source}", file=sys.stderr)
