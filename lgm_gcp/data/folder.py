"""Image-folder datasets (ImageNet, Places365), read by loader workers.

Layouts (``dataset.layout``):

- ``folders``: class-per-folder trees ``<root>/<train_dir>/<class>/*.jpg`` and ``<root>/<val_dir>/<class>/*``
  (torchvision's ImageFolder convention).
- ``torchvision``: Places365 as torchvision's ``datasets.Places365`` and the official archives lay it
  out: ``categories_places365.txt``, ``places365_train_standard.txt`` and ``places365_val.txt`` (one
  ``<path> <label>`` per line) under ``<root>``, the images in ``data_256/`` (or torchvision's renamed
  ``data_256_standard/``) and ``val_256/``; ``dataset.small=false`` reads the ``*_large`` ones.

Train: RandomResizedCrop(image_size) + flip (+ ColorJitter and AlexNet-style PCA lighting, as the
large-margin ImageNet recipe; ColorJitter as the GCP study's ShuffleNetV2 recipe). Eval: Resize(resize)
+ CenterCrop(image_size), or ``eval.ten_crop`` (TenCrop, the softmax averaged over the crops by the
evaluator), as 3G-Net reports on Places365. Decoding and transforms: ``data/images.py``; workers and
their persistence: ``data/loader.py``. An undecodable file stops the run with one line naming it, or
is skipped and counted with ``dataset.skip_bad_images=true``, as users of large scraped sets expect.
Each rank reads its share of every global batch in the same order as the in-memory path (seeded by
(seed, epoch)), and every image's augmentation is seeded by (seed, epoch, index).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Iterator, List, Literal, Optional, Sequence, Union

from lgm_gcp.data.files import DatasetError
from lgm_gcp.data.fine_grained import SPLITS, crop_boxes, fine_grained_samples
from lgm_gcp.data.images import ImageSamples, eval_transform, train_transform
from lgm_gcp.data.in_memory import epoch_step_count
from lgm_gcp.data.loader import GlobalBatchSampler, KeptLoader, ShardSampler, resolve_num_workers
from lgm_gcp.errors import ConfigError
from lgm_gcp.options.fields import RESUMABLE, Count, NonNeg

log = logging.getLogger("lgm_gcp")

PLACES365_LISTS = {"train": "places365_train_standard.txt", "val": "places365_val.txt"}
PLACES365_CATEGORIES = "categories_places365.txt"


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


def collate_skipping(batch):
    """(images, labels, paths of the skipped images)."""
    from torch.utils.data import default_collate

    good = [item for item in batch if item[0] is not None]
    bad = [item[1] for item in batch if item[0] is None]
    if not good:
        return None, None, bad
    images, labels = default_collate(good)
    return images, labels, bad


def places365_image_dir(root: Path, split: str, small: bool) -> Path:
    """``data_256`` / ``val_256`` (``*_large`` unless small), or torchvision's renamed ``data_256_standard``."""
    size = "256" if small else "large"
    names = [f"data_{size}", f"data_{size}_standard"] if split == "train" else [f"val_{size}"]
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DatasetError(f"places365: no image folder {' or '.join(str(root / n) for n in names)}; unpack "
                       f"{'train' if split == 'train' else 'val'}_{size}*.tar there (dataset.layout=torchvision)")


def places365_samples(root: str | Path, split: str, small: bool = True) -> tuple[list[tuple[str, int]], int]:
    """(the (path, label) samples of torchvision's Places365 ``split`` file list, the number of categories)."""
    root = Path(root)
    for name in (PLACES365_CATEGORIES, PLACES365_LISTS[split]):
        if not (root / name).is_file():
            raise DatasetError(f"places365: {root / name} does not exist; dataset.layout=torchvision reads the "
                               "file lists of filelist_places365-standard.tar there")
    num_categories = sum(1 for line in (root / PLACES365_CATEGORIES).read_text().splitlines() if line.strip())
    images = places365_image_dir(root, split, small)
    samples = []
    for number, line in enumerate((root / PLACES365_LISTS[split]).read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) >= num_categories:
            raise DatasetError(f"{root / PLACES365_LISTS[split]} line {number}: {line.strip()[:80]!r} is not "
                               f"'<image path> <label below {num_categories}>'")
        samples.append((str(images / fields[0].lstrip("/")), int(fields[1])))
    if not samples:
        raise DatasetError(f"{root / PLACES365_LISTS[split]} lists no images")
    if not Path(samples[0][0]).is_file():
        raise DatasetError(f"places365: {samples[0][0]}, the first image {PLACES365_LISTS[split]} lists, does "
                           f"not exist; the images belong under {images}")
    return samples, num_categories


def folder_samples(name: str, path: Path) -> tuple[list[tuple[str, int]], int]:
    """(the (path, label) samples of a class-per-folder tree, its number of class folders)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    check_folders(name, str(path.parent), path.name)
    try:
        classes, class_to_idx = find_classes(str(path))
        samples = make_dataset(str(path), class_to_idx, extensions=IMG_EXTENSIONS)
    except (FileNotFoundError, RuntimeError) as e:
        raise DatasetError(f"{name}: {path} holds no class folders with images "
                           f"({str(e).splitlines()[0]})") from e
    return samples, len(classes)


def split_samples(name: str, root: str, split: str, folder: str, layout: str, small: bool,
                  num_classes: int, level: str = "variant") -> list[tuple[str, int]]:
    """The (path, label) samples of ``split`` (train or val) in ``layout``, with as many classes as configured.
    A fine-grained layout reads the split ``folder`` names (train_dir / val_dir: CUB's train and test, ...)."""
    if layout == "torchvision":
        samples, found = places365_samples(root, split, small)
        where, what = Path(root) / PLACES365_CATEGORIES, "classes"
    elif layout in SPLITS:
        samples, found = fine_grained_samples(layout, root, folder, level)
        where, what = f"{root} ({layout}, split {folder})", "classes"
    else:
        samples, found = folder_samples(name, Path(root) / folder)
        where, what = Path(root) / folder, "class folders"
    if found != num_classes:
        raise DatasetError(f"{name}: {where} has {found} {what} but dataset.num_classes={num_classes}")
    return samples


class ImageFolderData:
    """``layout``: folders (``<root>/<train_dir>/<class>/*``), torchvision (Places365's file lists and
    data_256/, val_256/; ``small``: the 256x256 images, else the *_large ones), or a fine-grained benchmark's
    own layout, cub, aircraft (at annotation ``level`` variant, family or manufacturer) or cars, whose
    ``train_dir`` and ``val_dir`` name splits (``lgm_gcp/data/fine_grained.py``). ``decoder``: tensor
    (torchvision.io + transforms.v2 on uint8 tensors, 1.7-2x the reference's speed) or pil (PIL +
    transforms, torchvision's reference recipe pixel for pixel; lgm_gcp/data/images.py).
    ``skip_bad_images``: skip (and count) undecodable files instead of stopping with their path.
    ``resize``: the eval Resize, a shorter side or [height, width]; ``train_crop=center`` trains on that
    resize's centre crop (fast-MPN-COV's fine-grained recipe) instead of RandomResizedCrop.
    ``crop``: bbox cuts CUB-200-2011's images to their bounding boxes, banner FGVC-Aircraft's to the image
    above its 20-pixel copyright banner (both off by default, as fast-MPN-COV trains).
    ``ten_crop``, ``mirror`` (the centre crop and its mirror), ``num_workers`` and ``prefetch_factor``
    come from the trainer."""

    has_val = False  # the val folder is the test split; no held-out part of train

    def __init__(self, name: str, root: Annotated[Optional[str], RESUMABLE], num_classes: Count, image_size: Count,
                 mean: Sequence[float], std: Sequence[float], in_channels: Count = 3,
                 download: Annotated[bool, RESUMABLE] = False, train_dir: str = "train", val_dir: str = "val",
                 resize: Union[Count, List[int]] = 256,
                 train_crop: Literal["random_resized", "center"] = "random_resized", color_jitter: NonNeg = 0.0,
                 lighting: NonNeg = 0.0, ten_crop: bool = False, mirror: bool = False,
                 num_workers: int | str = "auto", prefetch_factor: int = 2, skip_bad_images: bool = False,
                 drop_last: bool = False, decoder: Literal["tensor", "pil"] = "tensor",
                 layout: Literal["folders", "torchvision", "cub", "aircraft", "cars"] = "folders", small: bool = True,
                 level: Literal["variant", "family", "manufacturer"] = "variant",
                 crop: Literal["none", "bbox", "banner"] = "none"):
        if download:
            raise DatasetError(f"{name}: dataset.download is not available for image-folder datasets; "
                               f"place the class folders under {root}/{train_dir} and {root}/{val_dir}")
        self.name, self.num_classes, self.in_channels = name, num_classes, in_channels
        self.ten_crop, self.skip_bad_images, self.skipped_images = ten_crop, skip_bad_images, []
        self.drop_last, self.num_workers = drop_last, resolve_num_workers(num_workers)
        splits = {split: split_samples(name, root, split, folder, layout, small, num_classes, level)
                  for split, folder in (("train", train_dir), ("val", val_dir))}
        boxes = {split: crop_boxes(layout, root, samples, crop) for split, samples in splits.items()}
        self.train_set = ImageSamples(splits["train"], train_transform(decoder, image_size, mean, std, color_jitter,
                                                                          lighting, train_crop, resize),
                                      decoder, skip_bad_images, boxes["train"])
        self.test_set = ImageSamples(splits["val"], eval_transform(decoder, image_size, resize, mean, std,
                                                                      ten_crop, mirror), decoder, skip_bad_images,
                                     boxes["val"])
        collate = collate_skipping if skip_bad_images else None
        self._train_loader = KeptLoader(self.train_set, self.num_workers, prefetch_factor, collate)
        self._test_loader = KeptLoader(self.test_set, self.num_workers, prefetch_factor, collate)

    @property
    def num_train_images(self) -> int:
        return len(self.train_set)

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        return epoch_step_count(len(self.train_set), batch_size, world_size, self.drop_last)

    def _batches(self, loader, device) -> Iterator:
        """Batches on ``device``; bad images end the run with one line naming the file, or are skipped
        (logged, and listed in ``skipped_images``) with ``dataset.skip_bad_images``."""
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
        loader = self._train_loader.get(
            (batch_size, rank, world_size),
            lambda: GlobalBatchSampler(len(self.train_set), batch_size, rank, world_size, self.drop_last), device)
        loader.batch_sampler.set_epoch(seed, epoch, skip)
        yield from self._batches(loader, device)

    def test_batches(self, batch_size: int, *, rank: int = 0, world_size: int = 1, device="cpu") -> Iterator:
        loader = self._test_loader.get((batch_size, rank, world_size),
                                       lambda: ShardSampler(len(self.test_set), batch_size, rank, world_size), device)
        yield from self._batches(loader, device)

    def num_test_batches(self, batch_size: int, world_size: int = 1) -> int:
        n = -(-len(self.test_set) // world_size)
        return -(-n // batch_size)
