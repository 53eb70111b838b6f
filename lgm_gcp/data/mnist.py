"""MNIST from the standard IDX files, in torchvision's layout (``<root>/MNIST/raw/``, or ``<root>`` itself)."""

from __future__ import annotations

from pathlib import Path

import torch

from lgm_gcp.data.files import DatasetError, find_file, read_idx
from lgm_gcp.data.in_memory import InMemoryData

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class MNIST(InMemoryData):
    def load(self):
        root = Path(self.root)
        if self.download:
            import torchvision

            torchvision.datasets.MNIST(str(root), download=True)
        dirs = [root / "MNIST" / "raw", root]
        how = "put the four IDX files there (torchvision's MNIST layout) or run once with dataset.download=true"
        out = []
        for split in ("train", "test"):
            img_name, lbl_name = FILES[split]
            images = read_idx(find_file(dirs, [img_name, img_name + ".gz"], "mnist", how), 3)
            labels = read_idx(find_file(dirs, [lbl_name, lbl_name + ".gz"], "mnist", how), 1)
            if len(images) != len(labels):
                raise DatasetError(f"mnist {split}: {len(images)} images but {len(labels)} labels under {root}")
            out += [torch.from_numpy(images.copy())[:, None], torch.from_numpy(labels.astype("int64"))]
        return tuple(out)
