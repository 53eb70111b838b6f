"""Tiny datasets written in the real on-disk formats (MNIST IDX, CIFAR pickles, class-folder trees)."""

import gzip
import pickle
import struct

import numpy as np
from PIL import Image


def write_idx(path, array, gz=False):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_mnist(root, gz=False, n_train=40, n_test=16, folder="MNIST"):
    """MNIST's IDX files under torchvision's <root>/<folder>/raw (Fashion-MNIST: folder="FashionMNIST")."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz)
    return raw


def make_cifar(root, classes=10, n=12, bad_label=None):
    rng = np.random.default_rng(0)
    if classes == 10:
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        folder, key = root / "cifar-10-batches-py", "labels"
    else:
        folder, files, key = root / "cifar-100-python", ["train", "test"], "fine_labels"
    folder.mkdir(parents=True)
    for name in files:
        labels = [int(i % classes) for i in range(n)]
        if bad_label is not None:
            labels[0] = bad_label
        batch = {"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8), key: labels}
        (folder / name).write_bytes(pickle.dumps(batch))
    return folder


def make_tree(root, classes=3, per_class=4, size=40):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"class_{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size + 6, 3), dtype=np.uint8)).save(d / f"{i}.png")


def smooth_image(rng, height, width):
    """A smooth random RGB image (upsampled noise), so JPEG keeps it close and resizes differ little."""
    coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.BILINEAR)


def make_places365_lists(root, classes=3, per_class=4, size=40, large=False):
    """Places365 as its archives and torchvision lay it out: categories_places365.txt ("/a/abbey 0"),
    places365_train_standard.txt ("/a/abbey/00000001.jpg 0"), places365_val.txt
    ("Places365_val_00000001.jpg 2"), images in data_256/<letter>/<class>/ and val_256/."""
    rng = np.random.default_rng(0)
    size_name = "large" if large else "256"
    names = [f"/{chr(ord('a') + c)}/class_{c}" for c in range(classes)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "categories_places365.txt").write_text("".join(f"{n} {c}\n" for c, n in enumerate(names)))
    train, val = [], []
    for c, name in enumerate(names):
        for i in range(per_class):
            rel = f"{name}/{i + 1:08d}.jpg"
            (root / f"data_{size_name}{rel}").parent.mkdir(parents=True, exist_ok=True)
            smooth_image(rng, size, size + 6).save(root / f"data_{size_name}{rel}", quality=90)
            train.append(f"{rel} {c}\n")
            val_name = f"Places365_val_{c * per_class + i + 1:08d}.jpg"
            (root / f"val_{size_name}").mkdir(exist_ok=True)
            smooth_image(rng, size, size).save(root / f"val_{size_name}" / val_name, quality=90)
            val.append(f"{val_name} {c}\n")
    (root / "places365_train_standard.txt").write_text("".join(train))
    (root / "places365_val.txt").write_text("".join(val))
    return root


# ----------------------------------------------------------------------------------- fine-grained benchmarks


def fine_grained_image(path, shade, height=20):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, 24, 3), shade, np.uint8)).save(path)


def write_cub(root):
    """Three species, five images: ids 1-3 train, 4-5 test (train_test_split 1 = train); classes 1-based."""
    base = root / "CUB_200_2011"
    images = {1: ("001.Albatross/a1.jpg", 1, 1), 2: ("002.Auklet/b1.jpg", 2, 1), 3: ("003.Blackbird/c1.jpg", 3, 1),
              4: ("001.Albatross/a2.jpg", 1, 0), 5: ("003.Blackbird/c2.jpg", 3, 0)}
    for image_id, (relative, _, _) in images.items():
        fine_grained_image(base / "images" / relative, 40 * image_id)
    base.joinpath("images.txt").write_text("".join(f"{i} {r}\n" for i, (r, _, _) in images.items()))
    base.joinpath("image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, (_, c, _) in images.items()))
    base.joinpath("train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, (_, _, t) in images.items()))
    # id x y width height, in pixels, as floats the way CUB writes them: image i's box is (i)x(2i) at (1, 2)
    base.joinpath("bounding_boxes.txt").write_text("".join(f"{i} 1.0 2.0 {float(i)} {2.0 * i}\n" for i in images))
    return base


def write_aircraft(root):
    """Two variants of two families; trainval holds three images, test one."""
    data = root / "fgvc-aircraft-2013b" / "data"
    for name in ("0001", "0002", "0003", "0004"):  # 50 rows: 30 of aircraft above the 20-row banner
        fine_grained_image(data / "images" / f"{name}.jpg", int(name) * 30, height=50)
    data.joinpath("variants.txt").write_text("707-320\nA300B4\n")
    data.joinpath("families.txt").write_text("A300\nBoeing 707\n")  # another order: labels tell the levels apart
    data.joinpath("images_variant_trainval.txt").write_text("0001 707-320\n0002 A300B4\n0003 A300B4\n")
    data.joinpath("images_variant_test.txt").write_text("0004 707-320\n")
    data.joinpath("images_family_trainval.txt").write_text("0001 Boeing 707\n0002 A300\n0003 A300\n")
    data.joinpath("images_family_test.txt").write_text("0004 Boeing 707\n")


def write_cars(root):
    """The devkit's .mat files as torchvision reads them: four train images of three classes (1-based), two test."""
    import scipy.io

    base = root / "stanford_cars"
    fields = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    train = np.array([(1, 1, 9, 9, c, f"{i:05d}.jpg") for i, c in enumerate([1, 2, 3, 1], 1)], dtype=fields)
    test = np.array([(1, 1, 9, 9, c, f"{i:05d}.jpg") for i, c in enumerate([3, 2], 1)], dtype=fields)
    (base / "devkit").mkdir(parents=True)
    scipy.io.savemat(base / "devkit" / "cars_train_annos.mat", {"annotations": train})
    scipy.io.savemat(base / "cars_test_annos_withlabels.mat", {"annotations": test})
    scipy.io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array(["a", "b", "c"], dtype=object)})
    for i, name in enumerate(train["fname"]):
        fine_grained_image(base / "cars_train" / name, 50 * i)
    for i, name in enumerate(test["fname"]):
        fine_grained_image(base / "cars_test" / name, 60 * i)
