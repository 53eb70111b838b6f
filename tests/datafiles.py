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
