"""Reading the standard on-disk formats, with one-line errors that name the path and the fix."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np

from lgm_gcp.errors import DatasetError


def search_dirs(root: str | Path | None, subfolders: Sequence[str], search: Sequence[str] = ()) -> list[Path]:
    """The folders a dataset's files are looked for in, in order: each of torchvision's ``subfolders``
    under ``root``, ``root`` itself, then every ``search`` folder as it is (duplicates dropped)."""
    dirs = ([Path(root) / sub for sub in subfolders] + [Path(root)] if root else []) + [Path(s) for s in search]
    return list(dict.fromkeys(dirs))


def find_file(dirs: Sequence[Path], names: Sequence[str], dataset: str, how: str) -> Path:
    for d in dirs:
        for name in names:
            if (d / name).is_file():
                return d / name
    raise DatasetError(f"{dataset}: no {names[0]} under {' or '.join(str(d) for d in dirs)}; {how}")


def read_idx(path: Path, expected_dims: int) -> np.ndarray:
    """An IDX file (MNIST's format: big-endian magic 0x08 0x0D/0x08, dims, then uint8 data), maybe gzipped."""
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path} is not an IDX uint8 file (bad magic number)")
    ndim = raw[3]
    if ndim != expected_dims:
        raise DatasetError(f"{path} has {ndim} dimensions; expected {expected_dims}")
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise DatasetError(f"{path} is truncated or corrupt: its header promises {shape} = {size} bytes of data, "
                           f"the file holds {len(raw) - header}; download it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (EOFError, pickle.UnpicklingError, ValueError) as e:
        raise DatasetError(f"{path} is truncated or corrupt ({type(e).__name__}); download it again") from e
