"""Datasets in their real on-disk formats (tiny files written here), the fast path's statistics and seeding."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lgm_gcp.data.files import DatasetError
from lgm_gcp.data.in_memory import random_crop_flip
from lgm_gcp.engine.train import run

from conftest import resolved
from datafiles import make_cifar, make_mnist, make_tree, write_idx

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
    from lgm_gcp.options.instantiate import instantiate

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

@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_loads_and_trains_one_epoch(tmp_path, gz):
    make_mnist(tmp_path / "data", gz)
    cfg = resolved("dataset=mnist", f"dataset.root={tmp_path / 'data'}", "backbone.widths=[4,8]", *TINY_TRAIN)
    summary = run(cfg, tmp_path / "run")
    assert summary["status"] == "finished" and summary["final"]["test_images"] == 16
    assert summary["epochs"][0]["train_images"] == 40


def test_mnist_missing_and_truncated_files(tmp_path):
    from lgm_gcp.options.instantiate import instantiate

    with pytest.raises(DatasetError, match=r"mnist: no train-images-idx3-ubyte under .*dataset.download=true"):
        instantiate(resolved("dataset=mnist", f"dataset.root={tmp_path}")["dataset"])
    raw = make_mnist(tmp_path / "d")
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte is truncated or corrupt: its header promises "
                                           r"\(40, 28, 28\)"):
        instantiate(resolved("dataset=mnist", f"dataset.root={tmp_path / 'd'}")["dataset"])


# ----------------------------------------------------------------------------------- Fashion-MNIST

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_debian_fashion = pytest.mark.skipif(not (DEBIAN_FASHION / "t10k-labels-idx1-ubyte.gz").is_file(),
                                          reason="apt-get install dataset-fashion-mnist (.ci/run installs it)")


def fashion(*overrides):
    from lgm_gcp.options.instantiate import instantiate

    return instantiate(resolved("dataset=fashion_mnist", *overrides)["dataset"])


@needs_debian_fashion
def test_fashion_mnist_reads_debians_files_in_place(tmp_path, monkeypatch):
    """The real files (Xiao et al. 2017): 60,000 + 10,000 images, exactly 6,000 / 1,000 per class, the
    first training labels 9 0 0 3 0 2 7 2 5 5 (ankle boot, T-shirt, T-shirt, dress, ...), and the training
    pixels' mean 0.2860 and std 0.3530 that the YAML normalises with. Found with no dataset override
    (LGM_GCP_DATA pointing at an empty folder), never downloaded."""
    import torchvision

    monkeypatch.setenv("LGM_GCP_DATA", str(tmp_path))
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", lambda *a, **k: pytest.fail("tried to download"))
    data = fashion("dataset.download=true")
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.train_y).tolist() == [6000] * 10
    assert torch.bincount(data.test_y).tolist() == [1000] * 10
    assert data.train_y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    pixels = data.train_x.double() / 255
    assert abs(pixels.mean().item() - data.mean.item()) < 5e-5 and abs(pixels.std().item() - data.std.item()) < 5e-5
    assert not list(tmp_path.iterdir())  # nothing written


@needs_debian_fashion
def test_fashion_mnist_real_headers_are_idx_uint8_with_their_counts():
    from lgm_gcp.data.files import read_idx

    for name, dims, shape in (("train-images-idx3-ubyte", 3, (60000, 28, 28)), ("t10k-labels-idx1-ubyte", 1, (10000,))):
        raw = gzip.open(DEBIAN_FASHION / f"{name}.gz").read(16)
        assert raw[:4] == bytes([0, 0, 8, dims])  # magic: two zero bytes, type 0x08 (uint8), dimension count
        assert read_idx(DEBIAN_FASHION / f"{name}.gz", dims).shape == shape


def test_fashion_mnist_search_order(tmp_path, monkeypatch):
    """dataset.root (and torchvision's FashionMNIST/raw under it) first, then ${LGM_GCP_DATA}/FashionMNIST/raw:
    a shared torchvision root is found, and an explicit root wins over it."""
    monkeypatch.setenv("LGM_GCP_DATA", str(tmp_path / "shared"))
    shared = make_mnist(tmp_path / "shared", n_train=20, folder="FashionMNIST")
    assert len(fashion().train_y) == 20
    make_mnist(tmp_path / "mine", n_train=30, folder="FashionMNIST", gz=True)
    assert len(fashion(f"dataset.root={tmp_path / 'mine'}").train_y) == 30
    assert shared.is_dir()


def test_fashion_mnist_missing_files_name_every_place_and_the_install_line(tmp_path, monkeypatch):
    monkeypatch.setenv("LGM_GCP_DATA", str(tmp_path))
    with pytest.raises(DatasetError) as err:
        fashion(f"dataset.root={tmp_path / 'none'}", f"dataset.search=[{tmp_path / 'x'}]")
    line = str(err.value)
    assert "\n" not in line and "fashion_mnist: no train-images-idx3-ubyte under" in line
    for place in (tmp_path / "none" / "FashionMNIST" / "raw", tmp_path / "none", tmp_path / "x"):
        assert str(place) in line
    assert "apt-get install dataset-fashion-mnist" in line and "dataset.download=true" in line


@pytest.mark.parametrize("fault", ["magic", "count", "size"])
def test_fashion_mnist_bad_files_name_the_file(tmp_path, fault):
    raw = make_mnist(tmp_path, folder="FashionMNIST")
    images = raw / "train-images-idx3-ubyte"
    if fault == "magic":
        images.write_bytes(b"\x00\x00\x09\x03" + images.read_bytes()[4:])
        expected = "is not an IDX uint8 file"
    elif fault == "count":
        write_idx(raw / "train-labels-idx1-ubyte", np.arange(39) % 10)
        expected = "holds 40 images but .*train-labels-idx1-ubyte 39 labels"
    else:
        write_idx(images, np.zeros((40, 32, 32)))
        expected = "holds 32x32 images; fashion_mnist has 28x28"
    with pytest.raises(DatasetError, match=f"{images}.*{expected}" if fault != "count" else expected):
        fashion(f"dataset.root={tmp_path}", "dataset.search=[]")


def test_cifar_and_mnist_are_found_under_a_shared_torchvision_root(tmp_path, monkeypatch):
    from lgm_gcp.options.instantiate import instantiate

    monkeypatch.setenv("LGM_GCP_DATA", str(tmp_path))
    make_cifar(tmp_path)  # <shared>/cifar-10-batches-py, torchvision's layout
    make_mnist(tmp_path, n_train=24)  # <shared>/MNIST/raw
    assert len(instantiate(resolved("dataset=cifar10")["dataset"]).train_y) == 60
    assert len(instantiate(resolved("dataset=mnist")["dataset"]).train_y) == 24


def test_val_fraction_holds_out_the_same_stratified_images_for_every_seed(tmp_path):
    """dataset.val_fraction=0.25 on 40 MNIST-format images, 4 per class: one per class leaves the training
    set (round(0.25 · 4) = 1), chosen by a fixed generator, so two configs with other run seeds agree; the
    test set is untouched and no image is in both splits."""
    make_mnist(tmp_path, n_train=40)
    from lgm_gcp.options.instantiate import instantiate

    a = instantiate(resolved("dataset=mnist", f"dataset.root={tmp_path}", "dataset.val_fraction=0.25",
                             "seed=0")["dataset"])
    b = instantiate(resolved("dataset=mnist", f"dataset.root={tmp_path}", "dataset.val_fraction=0.25",
                             "seed=7")["dataset"])
    whole = instantiate(resolved("dataset=mnist", f"dataset.root={tmp_path}")["dataset"])
    assert torch.bincount(a.val_y).tolist() == [1] * 10 and len(a.train_y) == 30 and a.steps_per_epoch(10) == 3
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.test_x, whole.test_x)
    flat = {tuple(x.flatten().tolist()) for x in a.train_x}
    assert not any(tuple(x.flatten().tolist()) in flat for x in a.val_x)
    assert sorted(map(tuple, torch.cat([a.train_x, a.val_x]).flatten(1).tolist())) == sorted(
        map(tuple, whole.train_x.flatten(1).tolist()))
    assert sum(len(y) for _, y in a.test_batches(4, split="val")) == 10 and a.num_test_batches(4, split="val") == 3


def test_val_fraction_picks_the_best_epoch_by_validation_not_test(tmp_path, monkeypatch):
    """Evaluations rigged so that test top-1 falls (95, 85, 75) while validation top-1 rises (70, 80, 90):
    the best epoch, in metrics.json and best.pt, must be the last."""
    from lgm_gcp.engine import train

    real, calls = train.evaluate, {"test": 0, "val": 0}

    def rigged(s, model, prefix="test", split="test"):
        out = real(s, model, prefix, split)
        if prefix in calls:
            calls[prefix] += 1
            step = 10 * calls[prefix] * (1 if split == "val" else -1)
            out[f"{prefix}_top1"] = {"test": 105.0, "val": 60.0}[prefix] + step
        return out

    monkeypatch.setattr(train, "evaluate", rigged)
    cfg = resolved("dataset.val_fraction=0.2", "backbone.widths=[4,8]", "trainer.max_epochs=3", *TINY_TRAIN[1:])
    summary = run(cfg, tmp_path / "run")
    assert [e["test_top1"] for e in summary["epochs"]] == [95.0, 85.0, 75.0]
    assert summary["best"]["epoch"] == 2 and summary["best"]["val_top1"] == 90.0
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=False)
    assert best["best"] == 90.0 and best["epoch"] == 3  # saved after the last epoch
    epochs = summary["epochs"]
    assert all("val_top1" in e and e["val_images"] > 0 for e in epochs)
    assert summary["best"] == max(epochs, key=lambda e: e["val_top1"])
    from lgm_gcp.options.instantiate import instantiate

    per_class = torch.bincount(instantiate(resolved()["dataset"]).train_y)  # digits' 1,347 training images
    assert epochs[0]["val_images"] == sum(round(0.2 * int(n)) for n in per_class) and epochs[0]["test_images"] == 450


# ----------------------------------------------------------------------------------- CIFAR pickles

@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_pickles_load_and_train_one_epoch(tmp_path, classes):
    make_cifar(tmp_path / "data", classes)
    cfg = resolved(f"dataset=cifar{classes}", f"dataset.root={tmp_path / 'data'}", "backbone=resnet20",
                   "backbone.width=4", "dataset.pad_mode=mean", *TINY_TRAIN)
    summary = run(cfg, tmp_path / "run")
    train_n = 60 if classes == 10 else 12
    assert summary["epochs"][0]["train_images"] == train_n and summary["final"]["test_images"] == 12  # partial kept


def test_cifar_truncated_pickle_and_label_beyond_classes(tmp_path):
    from lgm_gcp.options.instantiate import instantiate

    folder = make_cifar(tmp_path / "a")
    (folder / "data_batch_3").write_bytes((folder / "data_batch_3").read_bytes()[:500])
    with pytest.raises(DatasetError, match=r"data_batch_3 is truncated or corrupt"):
        instantiate(resolved("dataset=cifar10", f"dataset.root={tmp_path / 'a'}")["dataset"])
    make_cifar(tmp_path / "b", bad_label=12)
    with pytest.raises(DatasetError, match=r"cifar10 train labels reach 12, but dataset.num_classes=10"):
        instantiate(resolved("dataset=cifar10", f"dataset.root={tmp_path / 'b'}")["dataset"])


# ----------------------------------------------------------------------------------- ImageFolder trees

FOLDER = ["dataset=imagenet", "dataset.num_classes=3", "dataset.image_size=32", "dataset.resize=36",
          "backbone=resnet20", "backbone.width=4", "trainer.num_workers=0"]


@pytest.mark.parametrize("ten_crop", [False, True])
def test_image_folder_trains_one_epoch_with_optional_ten_crop(tmp_path, ten_crop):
    make_tree(tmp_path / "imagenet")
    cfg = resolved(*FOLDER, f"dataset.root={tmp_path / 'imagenet'}", f"eval.ten_crop={str(ten_crop).lower()}",
                   "dataset.color_jitter=0.4", "dataset.lighting=0.1", *TINY_TRAIN)
    summary = run(cfg, tmp_path / "run")
    assert summary["final"]["test_images"] == 12 and summary["epochs"][0]["train_images"] == 12  # 8 + 4


def indexed_tree(root, classes=3, per_class=8):
    """Solid grey training images whose grey level 8·i + 8 encodes the image's index i (PNG: exact)."""
    for split in ("train", "val"):
        for c in range(classes):
            (root / split / f"class_{c}").mkdir(parents=True)
            for j in range(per_class):
                level = 8 * (c * per_class + j) + 8
                Image.fromarray(np.full((40, 40, 3), level, np.uint8)).save(root / split / f"class_{c}" / f"{j}.png")


def epoch_order(data, seed, epoch, rank=0, world_size=1):
    """The image indices this rank reads in one epoch, decoded from the grey levels."""
    order = []
    for images, _ in data.train_batches(4 // world_size * world_size, seed=seed, epoch=epoch, rank=rank,
                                        world_size=world_size):
        pixels = images[:, 0].mean((1, 2)) * 0.229 + 0.485  # undo Normalize (ImageNet's red channel)
        order += ((pixels * 255).round().long() // 8 - 1).tolist()
    return order


def test_image_folder_order_is_a_function_of_seed_and_epoch_only(tmp_path):
    """Each epoch reads the images in a new order; the same (seed, epoch) always gives the same one,
    whatever object reads it, and N ranks together read exactly the one-process order."""
    from lgm_gcp.options.instantiate import instantiate

    indexed_tree(tmp_path / "t")
    cfg = resolved(*FOLDER, f"dataset.root={tmp_path / 't'}")["dataset"]
    data, again = instantiate(cfg, num_workers=0), instantiate(cfg, num_workers=0)
    e0, e1 = epoch_order(data, seed=0, epoch=0), epoch_order(data, seed=0, epoch=1)
    assert sorted(e0) == sorted(e1) == list(range(24))  # 6 full batches of 4: every image once
    assert e0 != e1  # P(two uniform permutations of 24 agree) = 1/24!
    assert epoch_order(again, seed=0, epoch=1) == e1 and epoch_order(data, seed=0, epoch=0) == e0
    assert epoch_order(data, seed=1, epoch=0) != e0
    r0, r1 = (epoch_order(data, 0, 1, rank=r, world_size=2) for r in (0, 1))
    assert [i for step in range(6) for i in r0[2 * step: 2 * step + 2] + r1[2 * step: 2 * step + 2]] == e1


def test_image_folder_errors_name_the_path(tmp_path):
    from lgm_gcp.options.instantiate import instantiate

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


def test_large_margin_cifar10_pads_with_int_255_mean(tmp_path):
    """The reference fills the padding with int(255·mean): 255·(0.4914, 0.4822, 0.4465) =
    (125.31, 122.96, 113.86) -> (125, 122, 113), not the rounded (125, 123, 114)."""
    from lgm_gcp.options.instantiate import instantiate

    make_cifar(tmp_path)
    cfg = resolved("experiment=lm_layer13_cifar10_softmax", f"dataset.root={tmp_path}")
    assert cfg["dataset"]["mean"] == [0.4914, 0.4822, 0.4465]
    assert instantiate(cfg["dataset"]).pad_fill.tolist() == [125, 122, 113]
    assert instantiate(resolved("dataset=cifar10", f"dataset.root={tmp_path}")["dataset"]).pad_fill is None  # zeros


# ----------------------------------------------------------------------------------- the last partial batch

def test_the_last_partial_batch_is_kept_unless_drop_last():
    """1,000 images at batch 128: 7 full batches + 104, so 8 steps (as a DataLoader with
    drop_last=False), 7 with drop_last; CIFAR's 50,000 at 128 give 391 and 390."""
    from lgm_gcp.data.in_memory import epoch_step_count
    from lgm_gcp.options.instantiate import instantiate

    assert (epoch_step_count(50_000, 128), epoch_step_count(50_000, 128, drop_last=True)) == (391, 390)
    assert epoch_step_count(1_281_167, 256) == 5005  # ImageNet at the GCP study's batch
    assert epoch_step_count(20, 6, world_size=4) == 3  # a last batch of 2 cannot feed 4 processes
    kept = instantiate(resolved("dataset=synthetic", "dataset.train_size=1000")["dataset"])
    labels = [y for _, y in kept.train_batches(128, seed=0, epoch=0)]
    assert [len(y) for y in labels] == [128] * 7 + [104] and kept.steps_per_epoch(128) == 8
    assert sorted(torch.cat(labels).tolist()) == sorted(kept.train_y.tolist())  # every image once
    dropped = instantiate(resolved("dataset=synthetic", "dataset.train_size=1000", "dataset.drop_last=true")["dataset"])
    assert [len(y) for _, y in dropped.train_batches(128, seed=0, epoch=0)] == [128] * 7


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_split_a_partial_batch_evenly_and_together_read_the_one_process_batch(world_size):
    from lgm_gcp.options.instantiate import instantiate

    data = instantiate(resolved("dataset=synthetic", "dataset.train_size=70", "dataset.pad=0")["dataset"])
    one = [y for _, y in data.train_batches(24, seed=1, epoch=0)]
    ranks = [[y for _, y in data.train_batches(24, seed=1, epoch=0, rank=r, world_size=world_size)]
             for r in range(world_size)]
    assert [len(b) for b in one] == [24, 24, 22]
    for step, full in enumerate(one):
        shares = [ranks[r][step] for r in range(world_size)]
        assert torch.equal(torch.cat(shares), full)
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_ddp_loss_scale_makes_the_averaged_gradient_the_global_mean():
    """Shares of 8 and 7 images of a 15-image batch on 2 ranks: DDP averages the ranks' gradients, so
    rank losses scaled by 8·2/15 and 7·2/15 average to (8·mean₀ + 7·mean₁)/15, the global mean."""
    from lgm_gcp.engine.train import ddp_loss_scale

    losses = torch.rand(15, dtype=torch.float64)
    means = [losses[:8].mean(), losses[8:].mean()]
    averaged = (means[0] * ddp_loss_scale(8, 15, 2) + means[1] * ddp_loss_scale(7, 15, 2)) / 2
    torch.testing.assert_close(averaged, losses.mean())
    assert ddp_loss_scale(64, 128, 2) == 1.0


def test_image_folder_keeps_its_last_partial_batch(tmp_path):
    from lgm_gcp.options.instantiate import instantiate

    indexed_tree(tmp_path / "t")  # 24 images
    data = instantiate(resolved(*FOLDER, f"dataset.root={tmp_path / 't'}")["dataset"], num_workers=0)
    sizes = [len(y) for _, y in data.train_batches(10, seed=0, epoch=0)]
    assert sizes == [10, 10, 4] and data.steps_per_epoch(10) == 3
    halves = [[len(y) for _, y in data.train_batches(10, seed=0, epoch=0, rank=r, world_size=2)] for r in (0, 1)]
    assert halves == [[5, 5, 2], [5, 5, 2]]


def test_input_size_resizes_every_batch_bilinearly():
    """A 2x2 image with columns 0 and 255, resized to 4x4 (half-pixel centres, as F.interpolate without
    align_corners): output column j samples input x = (j + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped
    to [0, 1], so the columns are 0, 0.25, 0.75, 1 of the range: 0, 63.75, 191.25, 255 (/255 with mean 0 and
    std 1: 0, 0.25, 0.75, 1). Train, test and validation batches all pass through normalize."""
    from lgm_gcp.data.synthetic import Synthetic

    data = Synthetic(name="synthetic", num_classes=2, image_size=2, in_channels=1, mean=[0.0], std=[1.0],
                     train_size=4, test_size=2, input_size=4)
    image = torch.tensor([[[[0, 255], [0, 255]]]], dtype=torch.uint8)
    expected = torch.tensor([0.0, 0.25, 0.75, 1.0]).expand(1, 1, 4, 4)
    torch.testing.assert_close(data.normalize(image), expected)
    train_images, _ = next(data.train_batches(4, seed=0, epoch=0))
    test_images, _ = next(data.test_batches(2))
    assert train_images.shape == (4, 1, 4, 4) and test_images.shape == (2, 1, 4, 4)
