"""The fine-grained benchmarks GCP is transferred to, read in place in their official layouts:
(path, label) samples of a split, for ``ImageFolderData`` (``dataset.layout=cub|aircraft|cars``).

* CUB-200-2011 (``<root>/CUB_200_2011/`` or ``<root>`` itself): ``images.txt`` (id, relative path),
  ``image_class_labels.txt`` (id, class 1..200), ``train_test_split.txt`` (id, 1 = train), ``images/``.
  Not in torchvision; read here. 5,994 train / 5,794 test images.
* FGVC-Aircraft (``<root>/fgvc-aircraft-2013b/``): torchvision's ``FGVCAircraft`` reads it, at the variant
  (100 classes), family (70) or manufacturer (30) level; splits train, val, trainval (6,667), test (3,333).
* Stanford Cars (``<root>/stanford_cars/``: ``devkit/``, ``cars_train/``, ``cars_test/`` and
  ``cars_test_annos_withlabels.mat``): torchvision's ``StanfordCars``; 8,144 train / 8,041 test, 196 classes.
"""

from __future__ import annotations

from pathlib import Path

from lgm_gcp.errors import DatasetError

CUB_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt")
SPLITS = {"cub": ("train", "test"), "aircraft": ("train", "val", "trainval", "test"), "cars": ("train", "test")}
AIRCRAFT_CLASSES = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}


def _cub_table(path: Path, what: str) -> dict:
    """{image id: the rest of the line} of one of CUB's two-column files."""
    table = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split(maxsplit=1)
        if not fields:
            continue
        if len(fields) != 2:
            raise DatasetError(f"{path} line {number}: {line.strip()[:80]!r} is not '<image id> <{what}>'")
        table[fields[0]] = fields[1].strip()
    return table


def cub_samples(root: str | Path, split: str) -> tuple[list[tuple[str, int]], int]:
    """(the (path, label) samples of CUB-200-2011's ``split``, train or test, labels 0-based; the classes)."""
    root = Path(root)
    base = root / "CUB_200_2011" if (root / "CUB_200_2011" / CUB_FILES[0]).is_file() else root
    missing = [name for name in CUB_FILES if not (base / name).is_file()]
    if missing:
        raise DatasetError(f"cub: no {missing[0]} under {root} or {root / 'CUB_200_2011'}; unpack "
                           "CUB_200_2011.tgz there (images.txt, image_class_labels.txt, train_test_split.txt, images/)")
    paths = _cub_table(base / "images.txt", "relative path")
    labels = _cub_table(base / "image_class_labels.txt", "class 1..200")
    is_train = _cub_table(base / "train_test_split.txt", "1 (train) or 0 (test)")
    want = "1" if split == "train" else "0"
    samples = []
    for image_id, relative in paths.items():
        if image_id not in labels or image_id not in is_train:
            raise DatasetError(f"cub: image id {image_id} of images.txt has no class or no split in {base}")
        if is_train[image_id] == want:
            samples.append((str(base / "images" / relative), int(labels[image_id]) - 1))
    if not samples:
        raise DatasetError(f"cub: {base / 'train_test_split.txt'} puts no image in the {split} split")
    if not Path(samples[0][0]).is_file():
        raise DatasetError(f"cub: {samples[0][0]}, the first {split} image images.txt lists, does not exist")
    return samples, len(set(labels.values()))


def aircraft_samples(root: str | Path, split: str, level: str) -> tuple[list[tuple[str, int]], int]:
    """FGVC-Aircraft's ``split`` at annotation ``level``, through torchvision's reader."""
    from torchvision.datasets import FGVCAircraft

    data = Path(root) / "fgvc-aircraft-2013b" / "data"
    for name in (AIRCRAFT_CLASSES[level], f"images_{level}_{split}.txt"):
        if not (data / name).is_file():
            raise DatasetError(f"aircraft: {data / name} does not exist; unpack fgvc-aircraft-2013b.tar.gz under "
                               f"{root}")
    try:
        dataset = FGVCAircraft(str(root), split=split, annotation_level=level)
    except KeyError as e:  # a class name of the split's list missing from the level's class list
        raise DatasetError(f"aircraft: {data / f'images_{level}_{split}.txt'} names the {level} {e}, which the "
                           f"{level} list does not") from None
    # torchvision keeps the lists it read as _image_files and _labels (no public accessor); the tests read
    # files written in the real layout, so a change there fails them, not a run
    return [(path, int(label)) for path, label in zip(dataset._image_files, dataset._labels)], len(dataset.classes)


def cars_samples(root: str | Path, split: str) -> tuple[list[tuple[str, int]], int]:
    """Stanford Cars' ``split`` through torchvision's reader (the devkit's .mat annotations, via scipy)."""
    from torchvision.datasets import StanfordCars

    base = Path(root) / "stanford_cars"
    needed = [base / "devkit" / "cars_meta.mat",
              base / "devkit" / "cars_train_annos.mat" if split == "train" else base / "cars_test_annos_withlabels.mat",
              base / ("cars_train" if split == "train" else "cars_test")]
    for path in needed:
        if not path.exists():
            raise DatasetError(f"cars: {path} does not exist; Stanford Cars goes under {base} in torchvision's "
                               "layout (devkit/, cars_train/, cars_test/, cars_test_annos_withlabels.mat)")
    dataset = StanfordCars(str(root), split=split)
    return [(path, int(label)) for path, label in dataset._samples], len(dataset.classes)  # see aircraft


AIRCRAFT_BANNER = 20  # pixels of copyright banner at the bottom of every FGVC-Aircraft image


def crop_boxes(layout: str, root: str | Path, samples: list, crop: str) -> list | None:
    """One (left, top, right, bottom) slice box per sample, or None for ``crop=none``. ``bbox``: CUB-200-2011's
    ``bounding_boxes.txt`` (id, x, y, width, height in pixels); ``banner``: FGVC-Aircraft without its
    20-pixel bottom banner, the dataset's official protocol (bottom = -20: counted from the image's end)."""
    if crop == "none":
        return None
    wanted = {"bbox": "cub", "banner": "aircraft"}[crop]
    if layout != wanted:
        raise DatasetError(f"dataset.crop={crop} applies to dataset={wanted} only, not layout {layout}; use "
                           "dataset.crop=none")
    if crop == "banner":
        return [(0, 0, None, -AIRCRAFT_BANNER)] * len(samples)
    root = Path(root)
    base = root / "CUB_200_2011" if (root / "CUB_200_2011" / CUB_FILES[0]).is_file() else root
    if not (base / "bounding_boxes.txt").is_file():
        raise DatasetError(f"dataset.crop=bbox: no bounding_boxes.txt in {base}; it ships in CUB_200_2011.tgz")
    by_path = {base / "images" / r: i for i, r in _cub_table(base / "images.txt", "relative path").items()}
    boxes = {i: [round(float(v)) for v in rest.split()] for i, rest in
             _cub_table(base / "bounding_boxes.txt", "x y width height").items()}
    out = []
    for path, _ in samples:
        x, y, w, h = boxes[by_path[Path(path)]]
        out.append((x, y, x + w, y + h))
    return out


def fine_grained_samples(layout: str, root: str | Path, split: str, level: str = "variant") -> tuple[list, int]:
    """The (path, label) samples of ``split`` and the class count, for a fine-grained ``layout``."""
    if split not in SPLITS[layout]:
        raise DatasetError(f"{layout}: no split {split!r}; its splits are {', '.join(SPLITS[layout])} "
                           "(dataset.train_dir and dataset.val_dir name them)")
    if layout == "cub":
        return cub_samples(root, split)
    if layout == "aircraft":
        return aircraft_samples(root, split, level)
    return cars_samples(root, split)
