"""CIFAR-10 / CIFAR-100 from the python-pickle batches, in torchvision's layout
(``<root>/cifar-10-batches-py/data_batch_{1..5}, test_batch``; ``<root>/cifar-100-python/train, test``),
then the folders of ``dataset.search`` (the YAMLs list torchvision's shared root:
``${LGM_GCP_DATA}/cifar-10-batches-py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lgm_gcp.data.files import DatasetError, find_file, read_pickle, search_dirs
from lgm_gcp.data.in_memory import FileData

LAYOUTS = {
    10: ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels"),
    100: ("cifar-100-python", ["train"], "test", "fine_labels"),
}


class CIFAR(FileData):
    def load(self):
        if self.num_classes not in LAYOUTS:
            raise DatasetError(f"dataset.num_classes={self.num_classes}: CIFAR has 10 or 100 classes")
        folder, train_files, test_file, key = LAYOUTS[self.num_classes]
        root = Path(self.root)
        dirs = search_dirs(root, [folder], self.search)
        if self.download and not any((d / test_file).is_file() for d in dirs):
            import torchvision

            (torchvision.datasets.CIFAR10 if self.num_classes == 10 else torchvision.datasets.CIFAR100)(
                str(root), download=True)
        how = f"unpack the python version of CIFAR-{self.num_classes} there, or run once with dataset.download=true"
        out = []
        for files in (train_files, [test_file]):
            xs, ys = [], []
            for name in files:
                path = find_file(dirs, [name], self.name, how)
                batch = read_pickle(path)
                if "data" not in batch or key not in batch:
                    raise DatasetError(f"{path} has no 'data'/'{key}' entries: is it a CIFAR-{self.num_classes} batch?")
                data = np.asarray(batch["data"], dtype=np.uint8)
                if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(batch[key]):
                    raise DatasetError(f"{path}: expected N x 3072 uint8 images with N labels, got {data.shape}")
                xs.append(data.reshape(-1, 3, 32, 32))
                ys.append(np.asarray(batch[key], dtype=np.int64))
            out += [torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))]
        return tuple(out)
