"""Datasets: each option returns (images, labels) batches for training and evaluation."""

from __future__ import annotations

from typing import Any, Iterator, Protocol, runtime_checkable


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
