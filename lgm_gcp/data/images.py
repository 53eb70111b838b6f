"""One image file -> one augmented (3, H, W) float tensor, for the image-folder datasets.

Two decoders (``dataset.decoder``):

- ``tensor`` (default): JPEGs decoded by ``torchvision.io.decode_jpeg`` (libjpeg-turbo), other formats
  by PIL, to a uint8 (3, H, W) tensor; then ``torchvision.transforms.v2`` on uint8 tensors (its
  vectorised antialiased resize). ``benchmarks/bench_folder.py`` compares it with torchvision's
  reference (PIL + ``transforms``) at the same worker count.
- ``pil``: PIL + ``transforms`` on PIL images, torchvision's reference recipe, for runs that must
  match a PIL-trained reference pixel for pixel (the two resample slightly differently).

Augmentation randomness is per image: each training image is transformed under torch's RNG seeded
by (seed, epoch, image index) (``sample_seed``). An image therefore gets the same crop whatever the
worker count, world size or resume point, so a resumed epoch is bitwise the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset, get_worker_info

from lgm_gcp.data.files import DatasetError

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


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The RNG seed of image ``index``'s augmentation in ``epoch`` (distinct for every triple in range)."""
    return ((int(seed) * 1_000_003 + int(epoch)) * 100_000_007 + int(index)) % (2**63)


def _reason(e: Exception) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"


def _bad_image(path: str, e: Exception) -> DatasetError:
    return DatasetError(f"{path}: cannot decode this image ({_reason(e)}); replace or delete it, or set "
                        "dataset.skip_bad_images=true to skip such files")


JPEG_MAGIC = b"\xff\xd8\xff"


def _pil_from(path: str, data: bytes):
    from PIL import Image

    try:
        return Image.open(io.BytesIO(data)).convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:  # UnidentifiedImageError is an OSError
        raise _bad_image(path, e) from None


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise _bad_image(path, e) from None


def load_pil(path: str):
    """PIL's RGB image, or a one-line DatasetError naming the file (zero-byte, truncated, not an image)."""
    return _pil_from(path, _read(path))


_DEVNULL: list = []


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 pointed at /dev/null for the duration: libjpeg writes its "Corrupt JPEG data"
    warnings there from C, so a broken file would print lines beside our one-line error (PIL is silent
    on the same files, and so is this decoder now). Four system calls, a few µs an image."""
    if not _DEVNULL:
        _DEVNULL.append(os.open(os.devnull, os.O_WRONLY))
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(_DEVNULL[0], 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_tensor(path: str) -> torch.Tensor:
    """A uint8 (3, H, W) RGB tensor: JPEGs through libjpeg-turbo (``torchvision.io.decode_jpeg``), other
    formats and any JPEG it refuses through PIL; a one-line DatasetError naming the file when PIL
    cannot decode it either. (Only JPEGs: libpng prints its own errors on stderr.) libjpeg's warnings
    about corrupt data are silenced, as PIL's are."""
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms.v2.functional import pil_to_tensor

    data = _read(path)
    if data[:3] == JPEG_MAGIC:
        try:
            with warnings.catch_warnings(), _quiet_stderr():  # torchvision 0.29 deprecates torchvision.io
                warnings.simplefilter("ignore", DeprecationWarning)
                return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError:
            pass  # truncated or odd: PIL decides, and names the fault
    return pil_to_tensor(_pil_from(path, data))


def train_transform(decoder: str, image_size: int, mean: Sequence[float], std: Sequence[float],
                    color_jitter: float = 0.0, lighting: float = 0.0, crop: str = "random_resized",
                    resize: int | Sequence[int] = 256) -> Callable:
    """RandomResizedCrop(image_size), or with ``crop="center"`` Resize(resize) + CenterCrop(image_size)
    (fast-MPN-COV's fine-grained training: only the flip is random); then flip (+ ColorJitter, + PCA
    lighting) + Normalize."""
    if decoder == "pil":
        from torchvision import transforms as T

        first = [T.Resize(resize), T.CenterCrop(image_size)] if crop == "center" else [T.RandomResizedCrop(image_size)]
        steps = [*first, T.RandomHorizontalFlip()]
        steps += [T.ColorJitter(color_jitter, color_jitter, color_jitter)] if color_jitter else []
        steps += [T.ToTensor()]
    else:
        from torchvision.transforms import v2 as T

        first = [T.Resize(resize, antialias=True), T.CenterCrop(image_size)] if crop == "center" \
            else [T.RandomResizedCrop(image_size, antialias=True)]
        steps = [*first, T.RandomHorizontalFlip()]
        steps += [T.ColorJitter(color_jitter, color_jitter, color_jitter)] if color_jitter else []
        steps += [T.ToDtype(torch.float32, scale=True)]
    steps += [Lighting(lighting)] if lighting else []
    return T.Compose([*steps, T.Normalize(mean, std)])


def eval_transform(decoder: str, image_size: int, resize: int | Sequence[int], mean: Sequence[float],
                   std: Sequence[float], ten_crop: bool = False, mirror: bool = False) -> Callable:
    """Resize(resize) + CenterCrop(image_size) + Normalize: (3, H, W); or TenCrop: (10, 3, H, W); or the
    centre crop and its horizontal mirror: (2, 3, H, W). ``resize``: the shorter side, or [height, width]."""
    if decoder == "pil":
        from torchvision import transforms as T

        resize_step, to_float = T.Resize(resize), T.ToTensor()
    else:
        from torchvision.transforms import v2 as T

        resize_step, to_float = T.Resize(resize, antialias=True), T.ToDtype(torch.float32, scale=True)
    normalize = T.Normalize(mean, std)
    if ten_crop:
        return T.Compose([resize_step, T.TenCrop(image_size), StackCrops(T.Compose([to_float, normalize]))])
    if mirror:
        return T.Compose([resize_step, T.CenterCrop(image_size), CropAndMirror(), StackCrops(T.Compose([to_float,
                                                                                                       normalize]))])
    return T.Compose([resize_step, T.CenterCrop(image_size), to_float, normalize])


class CropAndMirror:
    """A crop -> (the crop, its horizontal mirror), as fast-MPN-COV's ``CenterCropWithFlip`` evaluates."""

    def __call__(self, crop):
        from torchvision.transforms import functional as F

        return crop, F.hflip(crop)


class StackCrops:
    """A tuple of crops (TenCrop's ten, or a crop and its mirror) -> a normalised (crops, 3, H, W) tensor."""

    def __init__(self, to_normalized_tensor: Callable):
        self.to_normalized_tensor = to_normalized_tensor

    def __call__(self, crops) -> torch.Tensor:
        return torch.stack([self.to_normalized_tensor(c) for c in crops])


def crop_box(image, box: tuple):
    """``image`` (PIL, or a (C, H, W) tensor) cut to ``box`` = (left, top, right, bottom), read as slice bounds:
    None is the image's end and a negative value counts from it."""
    left, top, right, bottom = box
    if isinstance(image, torch.Tensor):
        return image[..., top:bottom, left:right]
    columns, rows = range(image.width)[left:right], range(image.height)[top:bottom]
    return image.crop((columns.start, rows.start, columns.stop, rows.stop))


class ImageSamples(Dataset):
    """(path, label) samples read by ``decoder``, cut to their ``boxes`` if given, and transformed.

    An item is ``(index, seed)``: with a seed, the transform runs under torch's RNG seeded by it (in
    the main process the caller's RNG state is put back afterwards). With ``skip_bad``, an undecodable
    file comes back as ``(None, path)`` instead of raising."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable, decoder: str = "tensor",
                 skip_bad: bool = False, boxes: Sequence[tuple] | None = None):
        self.samples, self.transform, self.skip_bad, self.boxes = samples, transform, skip_bad, boxes
        self.load = load_pil if decoder == "pil" else load_tensor

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int | None]):
        index, seed = key
        path, label = self.samples[index]
        try:
            image = self.load(path)
        except DatasetError:
            if self.skip_bad:
                return None, path
            raise
        if self.boxes is not None:
            image = crop_box(image, self.boxes[index])
        if seed is None:
            return self.transform(image), label
        # the CPU generator only (torch.manual_seed also seeds every accelerator: 100x slower)
        if get_worker_info() is not None:  # a loader worker: its RNG is its own
            torch.default_generator.manual_seed(seed)
            return self.transform(image), label
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self.transform(image), label
