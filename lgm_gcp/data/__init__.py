"""Datasets: each option returns (images, labels) batches for training and evaluation."""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Protocol, runtime_checkable


@runtime_checkable
class TrainingData(Protocol):
    """What the trainer reads of a dataset option, whichever its kind (``InMemoryData``: the fast path of
    digits, MNIST, CIFAR, ...; ``ImageFolderData``: class folders and Places365's lists). Batches are
    (images (B, C, H, W), labels (B,)) on ``device``; ten-crop evaluation batches are (B, 10, C, H, W)."""

    num_classes: int
    in_channels: int
    has_val: bool  # a held-out validation split (dataset.val_fraction): test_batches(..., split="val")
    skipped_images: list | None  # undecodable files skipped so far (image folders), None where none can be

    @property
    def num_train_images(self) -> int: ...

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int: ...

    def train_batches(self, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                      device: Any = "cpu", skip: int = 0) -> Iterator: ...

    def test_batches(self, batch_size: int, *, rank: int = 0, world_size: int = 1, device: Any = "cpu",
                     **split: str) -> Iterator: ...

    def num_test_batches(self, batch_size: int, world_size: int = 1, **split: str) -> int: ...


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
        from lgm_gcp.config.instantiate import instantiate

        instantiate(dataset_cfg, num_workers=0)
