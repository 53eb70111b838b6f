"""The fast path for datasets that fit in memory (digits, MNIST, CIFAR, synthetic).

Images are held once as a uint8 tensor (N, C, H, W). Padding, random crop, horizontal flip and
normalisation run batched on tensors, on the training device, with no PIL and no worker processes.

Randomness is drawn for the whole *global* batch from a generator seeded by (seed, epoch), and
each DDP rank slices its share. So a run on N processes sees exactly the images and crops that a
1-process run with the same global batch sees, and a resumed run replays them (mid-epoch resume
skips the batches already done).
"""

from __future__ import annotations

import abc
from typing import Annotated, Iterator, List, Literal, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from lgm_gcp.errors import ConfigError, DatasetError
from lgm_gcp.options.fields import DROP_RATE, RESUMABLE, Count, Index

Batch = Tuple[torch.Tensor, torch.Tensor]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(1_000_003 * int(seed) + int(epoch))


def draw_augmentation(b: int, pad: int, flip: bool, generator: torch.Generator) -> tuple:
    """Crop offsets (uniform over the (2·pad + 1)² positions) and flip flags for ``b`` images."""
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator) if pad > 0 else None
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator) if pad > 0 else None
    mask = torch.rand(b, generator=generator) < 0.5 if flip else None
    return oy, ox, mask


def apply_augmentation(images: torch.Tensor, oy, ox, mask, pad: int, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Pad by ``pad`` (with ``fill`` per channel, zeros if None), crop back at offsets (oy, ox), flip
    where ``mask``; any of them None skips that part. images: (B, C, H, W) uint8 on any device."""
    b, c, h, w = images.shape
    device = images.device
    out = images
    if pad > 0:
        padded = images.new_zeros((b, c, h + 2 * pad, w + 2 * pad))
        if fill is not None:
            padded[:] = fill.to(device=device, dtype=images.dtype).view(1, c, 1, 1)
        padded[:, :, pad : pad + h, pad : pad + w] = images
        rows = (oy.to(device)[:, None] + torch.arange(h, device=device))[:, None, :, None]
        cols = (ox.to(device)[:, None] + torch.arange(w, device=device))[:, None, None, :]
        batch = torch.arange(b, device=device)[:, None, None, None]
        chan = torch.arange(c, device=device)[None, :, None, None]
        out = padded[batch, chan, rows, cols]
    if mask is not None:
        out = torch.where(mask.to(device)[:, None, None, None], out.flip(-1), out)
    return out


def random_crop_flip(
    images: torch.Tensor, pad: int, flip: bool, generator: torch.Generator, fill: torch.Tensor | None = None
) -> torch.Tensor:
    """Draw and apply: uniform crop offsets after padding, and a horizontal flip for half the images."""
    return apply_augmentation(images, *draw_augmentation(len(images), pad, flip, generator), pad, fill)


def epoch_step_count(n: int, batch_size: int, world_size: int = 1, drop_last: bool = False) -> int:
    """Training steps in an epoch of ``n`` images: the full global batches, plus the last partial
    one unless ``drop_last`` (or, under DDP, unless it has fewer images than processes)."""
    full, rest = divmod(n, batch_size)
    return full + int(not drop_last and rest >= max(world_size, 1) and rest > 0)


def rank_share(global_size: int, rank: int, world_size: int) -> slice:
    """This rank's contiguous slice of a global batch: equal shares of a full batch; a partial one is
    split as evenly as it goes (sizes differ by at most one)."""
    base, extra = divmod(global_size, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


class InMemoryData(abc.ABC):
    """Base class of the ``TrainingData`` held in memory: subclasses implement ``load() -> (train_x,
    train_y, test_x, test_y)`` (uint8, int64).

    ``pad_mode``: zeros, or mean (the large-margin CIFAR recipe fills the padding with the mean colour).
    ``device_augment``: crop, flip and normalise on the training device, with no worker processes.
    ``drop_last``: drop the last partial training batch; kept by default, as the references' DataLoaders
    keep it (CIFAR at 128: 391 steps); under DDP one with fewer images than processes is dropped.
    ``val_fraction``: hold out this fraction of every class of the training set (fixed seed 0) as a
    validation set, evaluated each epoch as val_*; it picks the best epoch (best.pt) instead of the test set.
    ``known_classes``: train and test on these classes only, relabelled 0..K-1 in the order given (an
    open-set split, as Neal et al.'s 6 known MNIST digits); the test images of the other classes are kept
    apart as ``unknown_x`` for ``lgm-gcp-detect --inputs unknown``. None keeps every class.
    ``input_size``: the side the network sees; after augmentation every batch is resized bilinearly from
    ``image_size`` to it (a timm trunk whose stride 32 leaves nothing of a 28-pixel image takes
    ``dataset.input_size=64``); None keeps ``image_size``.
    ``ten_crop``, ``mirror``, ``num_workers`` and ``prefetch_factor`` come from the trainer (no loader workers here:
    batches are sliced from one tensor)."""

    skipped_images = None  # nothing to decode, nothing skipped

    def __init__(
        self,
        name: str,
        num_classes: Count,
        image_size: Count,
        mean: Sequence[float],
        std: Sequence[float],
        in_channels: Count = 3,
        root: Annotated[Optional[str], RESUMABLE] = None,
        download: Annotated[bool, RESUMABLE] = False,
        pad: Index = 0,
        pad_mode: Literal["zeros", "mean"] = "zeros",
        flip: bool = False,
        device_augment: bool = True,
        ten_crop: bool = False,
        mirror: bool = False,
        num_workers: int | str = 0,
        prefetch_factor: int = 2,
        drop_last: bool = False,
        val_fraction: Annotated[float, DROP_RATE] = 0.0,
        input_size: Optional[Count] = None,
        known_classes: Optional[List[int]] = None,
    ):
        if ten_crop or mirror:
            raise ConfigError(f"eval.{'ten_crop' if ten_crop else 'mirror'}=true needs an image-folder dataset "
                              f"(imagenet, places365, cub, aircraft, cars), not {name}")
        if not isinstance(root, (str, type(None))):
            root = str(root)
        self.name, self.root, self.download, self.drop_last = name, root, download, drop_last
        self.num_classes, self.image_size, self.in_channels = num_classes, image_size, in_channels
        self.input_size = input_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.pad, self.pad_mode, self.flip, self.device_augment = pad, pad_mode, flip, device_augment
        self.train_x, self.train_y, self.test_x, self.test_y = self.load()
        self._check()
        self.unknown_x = None
        if known_classes is not None:
            self._keep_known(list(known_classes))
        self.val_x = self.val_y = None
        if val_fraction:
            self._hold_out(val_fraction)

    @abc.abstractmethod
    def load(self) -> tuple:
        """(train images (N, C, H, W) uint8, train labels (N,) int64, test images, test labels)."""

    def _check(self) -> None:
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != self.in_channels:
                raise DatasetError(f"{self.name} {split} images: expected uint8 (N, {self.in_channels}, H, W), got "
                                 f"{tuple(x.shape)} {x.dtype}")
            top = int(y.max()) if len(y) else -1
            if top >= self.num_classes:
                raise DatasetError(f"{self.name} {split} labels reach {top}, "
                                   f"but dataset.num_classes={self.num_classes}")

    def _keep_known(self, known: list) -> None:
        """Keep the classes ``known`` (relabelled by their position in it); the other classes' test images
        become ``unknown_x``, their training images are dropped."""
        if not known or len(set(known)) != len(known) or not all(0 <= int(k) < self.num_classes for k in known):
            raise ConfigError(f"dataset.known_classes={known}: give distinct class indices in "
                              f"[0, {self.num_classes - 1}]")
        if len(known) == self.num_classes:
            raise ConfigError(f"dataset.known_classes={known} names every class; leave it out (null) to train on all")
        relabel = torch.full((self.num_classes,), -1, dtype=torch.int64)
        relabel[torch.tensor(known)] = torch.arange(len(known))
        train, test = relabel[self.train_y], relabel[self.test_y]
        self.unknown_x = self.test_x[test < 0]
        self.train_x, self.train_y = self.train_x[train >= 0], train[train >= 0]
        self.test_x, self.test_y = self.test_x[test >= 0], test[test >= 0]
        self.num_classes = len(known)

    def _hold_out(self, fraction: float) -> None:
        """Move round(fraction · n_c) images of every class c from the training set to a validation set,
        chosen by a generator of fixed seed 0: every run and seed holds out the same images, so runs
        stay comparable and model selection never looks at the test set."""
        g = torch.Generator().manual_seed(0)
        held = []
        for c in torch.unique(self.train_y):
            members = (self.train_y == c).nonzero().flatten()
            held.append(members[torch.randperm(len(members), generator=g)[: round(fraction * len(members))]])
        held = torch.cat(held).sort().values
        keep = torch.ones(len(self.train_y), dtype=torch.bool)
        keep[held] = False
        if not keep.any() or not len(held):
            raise ConfigError(f"dataset.val_fraction={fraction} leaves {int(keep.sum())} training and {len(held)} "
                              f"validation images of {len(keep)}; choose a fraction that leaves both some")
        self.val_x, self.val_y = self.train_x[held], self.train_y[held]
        self.train_x, self.train_y = self.train_x[keep], self.train_y[keep]

    @property
    def has_val(self) -> bool:
        return self.val_y is not None

    @property
    def pad_fill(self) -> torch.Tensor | None:
        """The padding colour of ``pad_mode=mean``: int(255·mean) per channel, as the large-margin
        reference computes it (CIFAR-10: 125, 122, 113); None pads with zeros."""
        return (self.mean.flatten() * 255).floor().to(torch.uint8) if self.pad_mode == "mean" else None

    # -------------------------------------------------------------------------------- batches
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> normalised float (B, C, H, W), resized bilinearly to ``input_size``² if set."""
        x = images.float().div_(255.0)
        if self.input_size and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))

    @property
    def num_train_images(self) -> int:
        return len(self.train_y)

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        return epoch_step_count(len(self.train_y), batch_size, world_size, self.drop_last)

    def train_batches(
        self, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
        device: torch.device | str = "cpu", skip: int = 0,
    ) -> Iterator[Batch]:
        """Shuffled, augmented batches of one epoch; ``batch_size`` is the global batch and each rank
        yields its share (``rank_share``). The last partial batch is kept unless ``drop_last``."""
        if batch_size % world_size:
            raise ConfigError(f"trainer.batch_size={batch_size} must be divisible by the {world_size} processes")
        g = epoch_generator(seed, epoch)
        order = torch.randperm(len(self.train_y), generator=g)
        fill = self.pad_fill
        for step in range(self.steps_per_epoch(batch_size, world_size)):
            idx = order[step * batch_size : (step + 1) * batch_size]
            # every rank draws the whole global batch's augmentation (so all consume the generator
            # alike) and applies its own share only
            drawn = draw_augmentation(len(idx), self.pad, self.flip, g)
            if step < skip:  # already trained on
                continue
            part = rank_share(len(idx), rank, world_size)
            x = self.train_x[idx[part]]
            if self.device_augment:
                x = x.to(device, non_blocking=True)
            x = apply_augmentation(x, *(d[part] if d is not None else None for d in drawn), self.pad, fill)
            yield self.normalize(x.to(device, non_blocking=True)), self.train_y[idx[part]].to(device)

    def test_batches(self, batch_size: int, *, rank: int = 0, world_size: int = 1,
                     device: torch.device | str = "cpu", split: str = "test") -> Iterator[Batch]:
        """Each test (or, with ``split="val"``, held-out validation) image exactly once across ranks
        (contiguous shards, no padding)."""
        x, y = (self.val_x, self.val_y) if split == "val" else (self.test_x, self.test_y)
        shard = torch.arange(len(y)).tensor_split(world_size)[rank]
        for chunk in shard.split(batch_size):
            yield self.normalize(x[chunk].to(device)), y[chunk].to(device)

    def num_test_batches(self, batch_size: int, world_size: int = 1, split: str = "test") -> int:
        n = -(-len(self.val_y if split == "val" else self.test_y) // world_size)
        return -(-n // batch_size)


class FileData(InMemoryData):
    """In-memory datasets read from files (MNIST, Fashion-MNIST, CIFAR). ``search``: more folders to find
    the files in, after root, in order."""

    def __init__(self, search: Sequence[str] = (), **kwargs):
        self.search = list(search)
        super().__init__(**kwargs)
