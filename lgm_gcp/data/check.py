"""A dataset's files looked at before any worker starts."""

from __future__ import annotations

from typing import Any, Mapping


def check_dataset(dataset_cfg: Mapping[str, Any]) -> None:
    """Before workers are spawned: raise a one-line ``DatasetError`` if the dataset's files are not
    there. Image-folder trees get a cheap look (the folders exist and hold images); file lists (Places365's,
    the fine-grained benchmarks') are read and their first image looked for; in-memory datasets (at most
    CIFAR's size) are read once."""
    if str(dataset_cfg["_target_"]).endswith("ImageFolderData"):
        from lgm_gcp.data.folder import check_folders, split_samples

        layout = dataset_cfg.get("layout", "folders")
        for split in ("train", "val"):
            if layout != "folders":
                split_samples(dataset_cfg["name"], dataset_cfg["root"], split, dataset_cfg[f"{split}_dir"], layout,
                              dataset_cfg.get("small", True), dataset_cfg["num_classes"],
                              dataset_cfg.get("level", "variant"))
            else:
                check_folders(dataset_cfg["name"], dataset_cfg["root"], dataset_cfg[f"{split}_dir"])
    else:
        from lgm_gcp.options.instantiate import instantiate

        instantiate(dataset_cfg, num_workers=0)
