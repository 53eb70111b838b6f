"""MNIST and Fashion-MNIST from the standard IDX files (``.gz`` or plain, read in place).

Folders are searched in order: ``root`` and torchvision's ``<root>/<MNIST|FashionMNIST>/raw`` under it,
then each folder of ``dataset.search`` as it is (the YAMLs list ``${LGM_GCP_DATA}/MNIST/raw``, and for
Fashion-MNIST ``${LGM_GCP_DATA}/FashionMNIST/raw`` and Debian's ``/usr/share/datasets/fashion-mnist``).
Nothing is written anywhere but ``root``, and only with ``dataset.download=true`` when no folder has the files.
"""

from __future__ import annotations

import logging

import torch

from lgm_gcp.data.files import DatasetError, find_file, read_idx, search_dirs
from lgm_gcp.data.in_memory import FileData

log = logging.getLogger("lgm_gcp")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class MNIST(FileData):
    torchvision_name = "MNIST"  # torchvision.datasets' class, and the folder it keeps the raw files in
    install = "put the four IDX files there (torchvision's MNIST layout) or run once with dataset.download=true"

    def load(self):
        dirs = search_dirs(self.root, [f"{self.torchvision_name}/raw"], self.search)
        if self.download and not self._found(dirs):
            import torchvision

            getattr(torchvision.datasets, self.torchvision_name)(str(self.root), download=True)
        out = []
        for split in ("train", "test"):
            img_name, lbl_name = FILES[split]
            img_path = find_file(dirs, [img_name, img_name + ".gz"], self.name, self.install)
            lbl_path = find_file(dirs, [lbl_name, lbl_name + ".gz"], self.name, self.install)
            images, labels = read_idx(img_path, 3), read_idx(lbl_path, 1)
            if images.shape[1:] != (self.image_size, self.image_size):
                raise DatasetError(f"{img_path} holds {images.shape[1]}x{images.shape[2]} images; {self.name} has "
                                   f"{self.image_size}x{self.image_size}")
            if len(images) != len(labels):
                raise DatasetError(f"{img_path} holds {len(images)} images but {lbl_path} {len(labels)} labels")
            out += [torch.from_numpy(images.copy())[:, None], torch.from_numpy(labels.astype("int64"))]
        log.info("%s: IDX files from %s", self.name, img_path.parent)
        return tuple(out)

    def _found(self, dirs) -> bool:
        names = [n for pair in FILES.values() for n in pair]
        return any(all((d / n).is_file() or (d / f"{n}.gz").is_file() for n in names) for d in dirs)


class FashionMNIST(MNIST):
    """Zalando's Fashion-MNIST (Xiao et al. 2017, arXiv:1708.07747): 60,000 + 10,000 28x28 grey images of
    10 clothing classes, MNIST's file names and format."""

    torchvision_name = "FashionMNIST"
    install = ("install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
               "or run once with dataset.download=true")
