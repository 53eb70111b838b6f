"""Datasets in their real on-disk formats (tiny files written here), the fast path's statistics and seeding."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import resolved
from lgm_gcp.data.files import DatasetError
from lgm_gcp.data.in_memory import random_crop_flip
from lgm_gcp.engine.train import run

TINY_TRAIN = ["trainer.max_epochs=1", "trainer.batch_size=8", "trainer.progress=false", "trainer.deterministic=true"]


# ----------------------------------------------------------------------------------- fast path statistics

def test_crop_offsets_are_uniform_over_the_81_positions():
    images = torch.zeros(8100, 1, 32, 32, dtype=torch.uint8)
    images[:, :, 16, 16] = 255  # the marker lands at (20 − oy, 20 − ox) after padding 4 and cropping
    out = random_crop_flip(images, pad=4, flip=False, generator=torch.Generator().manual_seed(0))
    flat = out.view(len(out), -1).argmax(1)
    oy, ox = 20 - flat // 32, 20 - flat % 32
    counts = torch.bincount(oy * 9 + ox, minlength=81).double()
    assert counts.numel() == 81 and (counts > 0).all()
    chi2 = ((counts - 100) ** 2 / 100).sum().item()
    assert chi2 < 124.8  # the 99.9% quantile of chi-square with 80 degrees of freedom


def test_flips_are_half_and_crops_keep_content():
    images = torch.zeros(4000, 1, 8, 8, dtype=torch.uint8)
    images[:, :, :, 0] = 200  # left column marked
    out = random_crop_flip(images, pad=0, flip=True, generator=torch.Generator().manual_seed(1))
    flipped = (out[:, 0, 0, 7] == 200).double().mean().item()
    assert abs(flipped - 0.5) < 4 * 0.5 / 4000**0.5
    assert torch.equal(out.sum((1, 2, 3)), images.sum((1, 2, 3)))


def test_mean_padding_fills_with_the_mean_colour():
    fill = torch.tensor([10, 20, 30], dtype=torch.uint8)
    images = torch.full((200, 3, 4, 4), 99, dtype=torch.uint8)
    out = random_crop_flip(images, pad=4, flip=False, generator=torch.Generator().manual_seed(0), fill=fill)
    values = {tuple(out[i, :, 0, 0].tolist()) for i in range(200)}
    assert values <= {(10, 20, 30), (99, 99, 99)} and len(values) == 2


def digits():
    from lgm_gcp.config.instantiate import instantiate

    return instantiate(resolved()["dataset"])


def test_batches_are_seeded_by_seed_and_epoch_and_shard_like_one_process():
    data = digits()
    one = list(data.train_batches(64, seed=3, epoch=2))
    again = list(data.train_batches(64, seed=3, epoch=2))
    other = list(data.train_batches(64, seed=3, epoch=3))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(one, again))
    assert not torch.equal(one[0][0], other[0][0])
    ranks = [list(data.train_batches(64, seed=3, epoch=2, rank=r, world_size=2)) for r in (0, 1)]
    for full, r0, r1 in zip(one, *ranks):
        assert torch.equal(full[0], torch.cat([r0[0], r1[0]])) and torch.equal(full[1], torch.cat([r0[1], r1[1]]))
    skipped = list(data.train_batches(64, seed=3, epoch=2, skip=5))
    assert len(skipped) == len(one) - 5 and all(torch.equal(a[0], b[0]) for a, b in zip(one[5:], skipped))


def test_test_batches_cover_every_image_once_across_ranks():
    data = digits()
    seen = [y for r in range(3) for _, y in data.test_batches(50, rank=r, world_size=3)]
    assert torch.equal(torch.cat(seen), data.test_y)


# ----------------------------------------------------------------------------------- MNIST IDX

def write_idx(path, array, gz=False):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_mnist(root, gz=False, n_train=40, n_test=16):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz)
    return raw


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_loads_and_trains_one_epoch(tmp_path, gz):
    make_mnist(tmp_path / "data", gz)
    cfg = resolved("dataset=mnist", f"dataset.root={tmp_path / 'data'}", "backbone.widths=[4,8]", *TINY_TRAIN)
    summary = run(cfg, tmp_path / "run")
    assert summary["status"] == "finished" and summary["final"]["test_images"] == 16
    assert summary["epochs"][0]["train_images"] == 40


def test_mnist_missing_and_truncated_files(tmp_path):
    from lgm_gcp.config.instantiate import instantiate

    with pytest.raises(DatasetError, match=r"mnist: no train-images-idx3-ubyte under .*dataset.download=true"):
        instantiate(resolved("dataset=mnist", f"dataset.root={tmp_path}")["dataset"])
    raw = make_mnist(tmp_path / "d")
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte is truncated or corrupt: its header promises "
                                           r"\(40, 28, 28\)"):
        instantiate(resolved("dataset=mnist", f"dataset.root={tmp_path / 'd'}")["dataset"])


# ----------------------------------------------------------------------------------- CIFAR pickles

def make_cifar(root, classes=10, n=12, bad_label=None):
    rng = np.random.default_rng(0)
    if classes == 10:
        folder, files, key = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "labels"
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


@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_pickles_load_and_train_one_epoch(tmp_path, classes):
    make_cifar(tmp_path / "data", classes)
    cfg = resolved(f"dataset=cifar{classes}", f"dataset.root={tmp_path / 'data'}", "backbone=resnet20",
                   "backbone.width=4", "dataset.pad_mode=mean", *TINY_TRAIN)
    summary = run(cfg, tmp_path / "run")
    train_n = 60 if classes == 10 else 12
    assert summary["epochs"][0]["train_images"] == train_n // 8 * 8 and summary["final"]["test_images"] == 12


def test_cifar_truncated_pickle_and_label_beyond_classes(tmp_path):
    from lgm_gcp.config.instantiate import instantiate

    folder = make_cifar(tmp_path / "a")
    (folder / "data_batch_3").write_bytes((folder / "data_batch_3").read_bytes()[:500])
    with pytest.raises(DatasetError, match=r"data_batch_3 is truncated or corrupt"):
        instantiate(resolved("dataset=cifar10", f"dataset.root={tmp_path / 'a'}")["dataset"])
    make_cifar(tmp_path / "b", bad_label=12)
    with pytest.raises(ValueError, match=r"cifar10 train labels reach 12, but dataset.num_classes=10"):
        instantiate(resolved("dataset=cifar10", f"dataset.root={tmp_path / 'b'}")["dataset"])


# ----------------------------------------------------------------------------------- ImageFolder trees

def make_tree(root, classes=3, per_class=4, size=40):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"class_{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size + 6, 3), dtype=np.uint8)).save(d / f"{i}.png")


FOLDER = ["dataset=imagenet", "dataset.num_classes=3", "dataset.image_size=32", "dataset.resize=36",
          "backbone=resnet20", "backbone.width=4", "trainer.num_workers=0"]


@pytest.mark.parametrize("ten_crop", [False, True])
def test_image_folder_trains_one_epoch_with_optional_ten_crop(tmp_path, ten_crop):
    make_tree(tmp_path / "imagenet")
    cfg = resolved(*FOLDER, f"dataset.root={tmp_path / 'imagenet'}", f"eval.ten_crop={str(ten_crop).lower()}",
                   "dataset.color_jitter=0.4", "dataset.lighting=0.1", *TINY_TRAIN)
    summary = run(cfg, tmp_path / "run")
    assert summary["final"]["test_images"] == 12 and summary["epochs"][0]["train_images"] == 8


def test_image_folder_errors_name_the_path(tmp_path):
    from lgm_gcp.config.instantiate import instantiate

    def build(root, *extra):
        return instantiate(resolved(*FOLDER, f"dataset.root={root}", *extra)["dataset"], num_workers=0)

    with pytest.raises(DatasetError, match=r"folder .*nowhere/train does not exist"):
        build(tmp_path / "nowhere")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "val").mkdir()
    with pytest.raises(DatasetError, match=r"empty/train holds no class folders"):
        build(tmp_path / "empty")
    make_tree(tmp_path / "tree")
    with pytest.raises(DatasetError, match=r"has 3 class folders but dataset.num_classes=5"):
        build(tmp_path / "tree", "dataset.num_classes=5")


def test_ten_crop_refused_on_in_memory_datasets(tmp_path):
    with pytest.raises(ValueError, match="eval.ten_crop=true needs an image-folder dataset"):
        run(resolved("eval.ten_crop=true", *TINY_TRAIN), tmp_path)
