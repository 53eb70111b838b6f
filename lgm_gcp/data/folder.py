"""Class-per-folder image trees (ImageNet, Places365): ``<root>/train/<class>/*.jpg``, ``<root>/val/<class>/*``.

Train: RandomResizedCrop(image_size) + flip (+ ColorJitter and AlexNet-style PCA lighting, as the
large-margin ImageNet recipe; ColorJitter as the GCP study's ShuffleNetV2 recipe). Eval: Resize(resize)
+ CenterCrop(image_size), or ``eval.ten_crop`` (TenCrop, the softmax averaged over the crops by the
evaluator), as 3G-Net reports on Places365. Workers decode with PIL through a DataLoader (an
undecodable file stops the run with one line naming it, or is skipped and counted with
``dataset.skip_bad_images=true``, as users of large scraped sets expect); each rank
reads its share of every global batch in the same order as the in-memory path (seeded by
(seed, epoch)); worker RNG is seeded by (seed, epoch, rank).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader

from lgm_gcp.data.files import DatasetError
from lgm_gcp.data.in_memory import epoch_generator, epoch_step_count, rank_share
from lgm_gcp.errors import ConfigError

log = logging.getLogger("lgm_gcp")

# ImageNet RGB principal components (Krizhevsky et al. 2012), used by PCA lighting.
_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
_EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])


class Lighting:
    """Add eigvec @ (alpha * eigval), alpha ~ N(0, std), to a (3, H, W) tensor in [0, 1]."""

    def __init__(self, std: float):
        self.std = std

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(3) * self.std
        return img + (_EIGVEC @ (alpha * _EIGVAL)).view(3, 1, 1)


class GlobalBatchSampler:
    """This rank's share of every global batch of one epoch (the last partial batch kept unless
    ``drop_last``), in the order one process would read them."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, rank: int, world_size: int, skip: int = 0,
                 drop_last: bool = False):
        self.order = torch.randperm(n, generator=epoch_generator(seed, epoch))
        self.n, self.batch_size, self.rank, self.world_size, self.skip = n, batch_size, rank, world_size, skip
        self.steps = epoch_step_count(n, batch_size, world_size, drop_last)

    def __len__(self) -> int:
        return self.steps - self.skip

    def __iter__(self):
        for step in range(self.skip, self.steps):
            start = step * self.batch_size
            size = min(self.batch_size, self.n - start)
            part = rank_share(size, self.rank, self.world_size)
            yield self.order[start + part.start: start + part.stop].tolist()


def check_folders(name: str, root: str | None, split_dir: str) -> Path:
    """``<root>/<split_dir>`` must exist and hold class folders with at least one image: one line otherwise."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    path = Path(root or ".") / split_dir
    if not path.is_dir():
        raise DatasetError(f"{name}: folder {path} does not exist; expected class sub-folders of images "
                           f"there (set dataset.root=/path/to/{name})")
    for class_dir in sorted(p for p in path.iterdir() if p.is_dir()):
        if any(f.suffix.lower() in IMG_EXTENSIONS for f in class_dir.iterdir()):
            return path
    raise DatasetError(f"{name}: {path} holds no class folders with images ({', '.join(IMG_EXTENSIONS)})")


def load_image(path: str):
    """PIL's RGB image, or a one-line DatasetError naming the file (zero-byte, truncated, not an image)."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:  # UnidentifiedImageError is an OSError
        reason = " ".join(str(e).split())[:160]
        raise DatasetError(f"{path}: cannot decode this image ({type(e).__name__}: {reason}); replace or delete "
                           "it, or set dataset.skip_bad_images=true to skip such files") from None


class SkippingFolder:
    """An ImageFolder whose undecodable images come back as None (``dataset.skip_bad_images``)."""

    def __init__(self, folder):
        self.folder = folder

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int):
        try:
            return self.folder[index]
        except DatasetError:
            return None, self.folder.samples[index][0]


def collate_skipping(batch):
    """(images, labels, paths of the skipped images)."""
    from torch.utils.data import default_collate

    good = [item for item in batch if item[0] is not None]
    bad = [item[1] for item in batch if item[0] is None]
    if not good:
        return None, None, bad
    images, labels = default_collate(good)
    return images, labels, bad


class StackCrops:
    """TenCrop's tuple of PIL crops -> a normalised (10, 3, H, W) tensor."""

    def __init__(self, normalize):
        self.normalize = normalize

    def __call__(self, crops) -> torch.Tensor:
        from torchvision.transforms.functional import to_tensor

        return torch.stack([self.normalize(to_tensor(c)) for c in crops])


class ImageFolderData:
    def __init__(self, name: str, root: str, num_classes: int, image_size: int, mean: Sequence[float],
                 std: Sequence[float], in_channels: int = 3, download: bool = False, train_dir: str = "train",
                 val_dir: str = "val", resize: int = 256, color_jitter: float = 0.0, lighting: float = 0.0,
                 ten_crop: bool = False, num_workers: int = 4, skip_bad_images: bool = False,
                 drop_last: bool = False):
        from torchvision import datasets
        from torchvision import transforms as T

        if download:
            raise DatasetError(f"{name}: dataset.download is not available for image-folder datasets; "
                               f"place the class folders under {root}/{train_dir} and {root}/{val_dir}")
        self.name, self.num_classes, self.in_channels, self.num_workers = name, num_classes, in_channels, num_workers
        self.ten_crop, self.skip_bad_images, self.skipped_images = ten_crop, skip_bad_images, []
        self.drop_last = drop_last
        normalize = T.Normalize(mean, std)
        train_tf = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
        if color_jitter:
            train_tf.append(T.ColorJitter(color_jitter, color_jitter, color_jitter))
        train_tf.append(T.ToTensor())
        if lighting:
            train_tf.append(Lighting(lighting))
        train_tf.append(normalize)
        if ten_crop:
            eval_tf = T.Compose([T.Resize(resize), T.TenCrop(image_size), StackCrops(normalize)])
        else:
            eval_tf = T.Compose([T.Resize(resize), T.CenterCrop(image_size), T.ToTensor(), normalize])
        self.train_set = self._folder(datasets, Path(root) / train_dir, T.Compose(train_tf))
        self.test_set = self._folder(datasets, Path(root) / val_dir, eval_tf)

    def _folder(self, datasets, path: Path, transform):
        check_folders(self.name, str(path.parent), path.name)
        try:
            ds = datasets.ImageFolder(str(path), transform=transform, loader=load_image)
        except (FileNotFoundError, RuntimeError) as e:
            raise DatasetError(f"{self.name}: {path} holds no class folders with images "
                               f"({str(e).splitlines()[0]})") from e
        if len(ds.classes) != self.num_classes:
            raise DatasetError(f"{self.name}: {path} has {len(ds.classes)} class folders but "
                               f"dataset.num_classes={self.num_classes}")
        return ds

    @property
    def num_train_images(self) -> int:
        return len(self.train_set)

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        return epoch_step_count(len(self.train_set), batch_size, world_size, self.drop_last)

    def _loader(self, dataset, batch_sampler, seed: int, device) -> Iterator:
        """Batches on ``device``; bad images end the run with one line naming the file, or are skipped
        (logged, and listed in ``skipped_images``) with ``dataset.skip_bad_images``."""
        loader = DataLoader(SkippingFolder(dataset) if self.skip_bad_images else dataset,
                            batch_sampler=batch_sampler, num_workers=self.num_workers,
                            pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(seed),
                            persistent_workers=False, collate_fn=collate_skipping if self.skip_bad_images else None)
        batches = iter(loader)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except DatasetError as e:  # raised in a worker: the message holds its traceback; keep the last line
                raise DatasetError(str(e).strip().splitlines()[-1].split("DatasetError: ", 1)[-1]) from None
            if self.skip_bad_images:
                images, labels, bad = batch
                for path in bad:
                    log.warning("skipped an undecodable image: %s", path)
                self.skipped_images += bad
                if images is None:
                    continue
            else:
                images, labels = batch
            yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    def train_batches(self, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                      device="cpu", skip: int = 0) -> Iterator:
        if batch_size % world_size:
            raise ConfigError(f"trainer.batch_size={batch_size} must be divisible by the {world_size} processes")
        sampler = GlobalBatchSampler(len(self.train_set), batch_size, seed, epoch, rank, world_size, skip,
                                     self.drop_last)
        yield from self._loader(self.train_set, sampler, (seed * 1000 + epoch) * 1000 + rank, device)

    def test_batches(self, batch_size: int, *, rank: int = 0, world_size: int = 1, device="cpu") -> Iterator:
        shard = torch.arange(len(self.test_set)).tensor_split(world_size)[rank]
        batches = [c.tolist() for c in shard.split(batch_size)]
        yield from self._loader(self.test_set, batches, 0, device)

    def num_test_batches(self, batch_size: int, world_size: int = 1) -> int:
        n = -(-len(self.test_set) // world_size)
        return -(-n // batch_size)
