"""Datasets: each option returns (images, labels) batches for training and evaluation."""

from __future__ import annotations

from typing import Any, Mapping


def check_dataset(dataset_cfg: Mapping[str, Any]) -> None:
    """Before workers are spawned: raise a one-line ``DatasetError`` if the dataset's files are not
    there. Image-folder trees get a cheap look (the folders exist and hold images; Places365's file lists parse and
    their first image exists); in-memory
    datasets (at most CIFAR's size) are read once."""
    if str(dataset_cfg["_target_"]).endswith("ImageFolderData"):
        from lgm_gcp.data.folder import check_folders, split_samples

        for split in ("train", "val"):
            if dataset_cfg.get("layout") == "torchvision":
                split_samples(dataset_cfg["name"], dataset_cfg["root"], split, "", "torchvision",
                              dataset_cfg.get("small", True), dataset_cfg["num_classes"])
            else:
                check_folders(dataset_cfg["name"], dataset_cfg["root"], dataset_cfg[f"{split}_dir"])
    else:
        from lgm_gcp.config.instantiate import instantiate

        instantiate(dataset_cfg, num_workers=0)
