"""The image-folder pipeline: worker counts, per-image augmentation seeds, kept loaders, the two
decoders, and Places365 in torchvision's layout (tiny files written here in the real formats)."""

import multiprocessing

import numpy as np
import pytest
import torch
from PIL import Image

from lgm_gcp.data import loader
from lgm_gcp.data.files import DatasetError
from lgm_gcp.data.images import load_pil, load_tensor
from lgm_gcp.data.loader import KeptLoader, auto_num_workers, resolve_num_workers
from lgm_gcp.engine.train import run
from lgm_gcp.options.instantiate import instantiate

from conftest import resolved
from datafiles import make_places365_lists, make_tree, smooth_image

FOLDER = ["dataset=imagenet", "dataset.num_classes=3", "dataset.image_size=32", "dataset.resize=36",
          "backbone=resnet20", "backbone.width=4"]
TINY_TRAIN = ["trainer.max_epochs=1", "trainer.batch_size=8", "trainer.progress=false", "trainer.deterministic=true"]


def folder_data(root, *extra, **kwargs):
    return instantiate(resolved(*FOLDER, f"dataset.root={root}", *extra)["dataset"], **kwargs)


# ----------------------------------------------------------------------------------- worker counts

def test_auto_workers_are_the_ranks_share_of_the_cpus_less_one_from_1_to_8():
    # 16 CPUs: one rank 16 - 1 = 15 -> capped at 8; four ranks 16 // 4 - 1 = 3; eight ranks on
    # 8 CPUs 8 // 8 - 1 = 0 -> at least 1; 2 CPUs, one rank: 1
    assert [auto_num_workers(1, 16), auto_num_workers(4, 16), auto_num_workers(8, 8), auto_num_workers(1, 2)] \
        == [8, 3, 1, 1]


def test_auto_workers_read_the_ranks_per_node_from_torchrun_or_slurm(monkeypatch):
    monkeypatch.setattr(loader, "available_cpus", lambda: 32)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4(x2)")  # 4 tasks on each of 2 nodes: 32 // 4 - 1 = 7
    assert resolve_num_workers("auto") == 7
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # torchrun's wins: 32 // 8 - 1 = 3
    assert resolve_num_workers("auto") == 3
    assert resolve_num_workers(5) == 5


def _auto_in(queue):
    queue.put(auto_num_workers(1, 16))


def test_auto_workers_are_none_in_a_daemonic_process():
    """A daemonic process (joblib's multiprocessing backend) may not start children: auto gives 0."""
    queue = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=_auto_in, args=(queue,), daemon=True)
    child.start()
    child.join(60)
    assert queue.get(timeout=10) == 0


# ----------------------------------------------------------------------------------- augmentation seeds

def batches(data, **kwargs):
    return [(x.clone(), y.clone()) for x, y in data.train_batches(4, seed=3, epoch=1, **kwargs)]


def assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("decoder", ["tensor", "pil"])
def test_each_images_augmentation_depends_on_seed_epoch_and_image_only(tmp_path, decoder):
    """RandomResizedCrop, flip, jitter and lighting of an image are drawn from torch's RNG seeded by
    (seed, epoch, index): the same batches with 0 or 2 workers, from a mid-epoch resume, and split over
    ranks; the caller's RNG is left as it was."""
    make_tree(tmp_path / "t", per_class=4)
    extra = ["dataset.color_jitter=0.4", "dataset.lighting=0.1", f"dataset.decoder={decoder}"]
    inline = folder_data(tmp_path / "t", *extra, num_workers=0)
    rng_before = torch.get_rng_state()
    full = batches(inline)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert_same(batches(folder_data(tmp_path / "t", *extra, num_workers=2)), full)
    assert_same(batches(inline, skip=1), full[1:])
    shares = [batches(inline, rank=r, world_size=2) for r in (0, 1)]
    assert_same([(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])) for a, b in zip(*shares)], full)
    other = [x for x, _ in inline.train_batches(4, seed=3, epoch=2)]
    assert not torch.equal(torch.cat(other), torch.cat([x for x, _ in full]))  # a new epoch, new crops and order


# ----------------------------------------------------------------------------------- kept loaders

def test_each_split_builds_one_loader_whose_workers_persist(tmp_path, monkeypatch):
    built = []

    class CountingLoader(torch.utils.data.DataLoader):
        def __init__(self, *args, **kwargs):
            built.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(loader, "DataLoader", CountingLoader)
    make_tree(tmp_path / "t", per_class=4)
    data = folder_data(tmp_path / "t", num_workers=1, prefetch_factor=3)
    for epoch in range(3):
        assert sum(len(y) for _, y in data.train_batches(4, seed=0, epoch=epoch)) == 12
        assert sum(len(y) for _, y in data.test_batches(4)) == 12
    assert len(built) == 2  # one for training, one for evaluation, for all three epochs
    assert all(k["persistent_workers"] and k["prefetch_factor"] == 3 and k["num_workers"] == 1 for k in built)
    list(data.test_batches(5))  # a new batch layout gets a new loader
    assert len(built) == 3


def test_batches_are_pinned_for_a_cuda_device_only():
    kept = KeptLoader([("x", 0)], num_workers=0)
    assert kept.get((1,), lambda: [[0]], "cuda").pin_memory and not kept.get((1,), lambda: [[0]], "cpu").pin_memory


# ----------------------------------------------------------------------------------- decoders

def test_the_tensor_decoder_reads_jpeg_like_pil_and_other_formats_through_pil(tmp_path):
    """Both decode JPEG with libjpeg-turbo's default IDCT: equal to within 1 grey level. PNG, BMP,
    TIFF, a greyscale and a CMYK JPEG come back as PIL's RGB conversion."""
    rng = np.random.default_rng(0)
    image = smooth_image(rng, 48, 64)
    image.save(tmp_path / "a.jpg", quality=90)
    tensor = load_tensor(str(tmp_path / "a.jpg"))
    pil = torch.from_numpy(np.array(load_pil(str(tmp_path / "a.jpg")))).permute(2, 0, 1)
    assert tensor.dtype == torch.uint8 and tensor.shape == (3, 48, 64)
    assert (tensor.int() - pil.int()).abs().max() <= 1
    for name, img in [("b.png", image), ("c.bmp", image), ("d.tiff", image), ("e.jpg", image.convert("L")),
                      ("f.jpg", image.convert("CMYK"))]:
        img.save(tmp_path / name)
        expected = torch.from_numpy(np.array(Image.open(tmp_path / name).convert("RGB"))).permute(2, 0, 1)
        got = load_tensor(str(tmp_path / name))
        assert got.shape == (3, 48, 64) and (got.int() - expected.int()).abs().max() <= 1, name


def test_tensor_and_pil_evaluation_crops_differ_by_resampling_only(tmp_path):
    """Resize(36) + CenterCrop(32) of the same images: the two resamplers differ by well under one
    grey level on average (1/255/0.225 = 0.017 in normalised units)."""
    make_tree(tmp_path / "t", per_class=4)
    tensor, pil = (torch.cat([x for x, _ in folder_data(tmp_path / "t", f"dataset.decoder={d}",
                                                         num_workers=0).test_batches(12)]) for d in ("tensor", "pil"))
    assert tensor.shape == pil.shape == (12, 3, 32, 32)
    assert (tensor - pil).abs().mean() < 0.017


# ----------------------------------------------------------------------------------- Places365's lists

PLACES = ["dataset=places365", "dataset.num_classes=3", "dataset.image_size=32", "dataset.resize=36",
          "dataset.layout=torchvision", "backbone=resnet20", "backbone.width=4"]


def test_places365_in_torchvisions_layout_trains_and_reads_every_listed_image(tmp_path):
    root = make_places365_lists(tmp_path / "places365")
    cfg = resolved(*PLACES, f"dataset.root={root}", "eval.ten_crop=true", *TINY_TRAIN)
    data = instantiate(cfg["dataset"], num_workers=0, ten_crop=True)
    assert data.train_set.samples[5] == (str(root / "data_256/b/class_1/00000002.jpg"), 1)  # "/b/class_1/... 1"
    assert data.test_set.samples[11] == (str(root / "val_256/Places365_val_00000012.jpg"), 2)
    summary = run(cfg, tmp_path / "run")
    assert summary["final"]["test_images"] == 12 and summary["epochs"][0]["train_images"] == 12


def test_places365_reads_torchvisions_renamed_and_the_large_image_folders(tmp_path):
    root = make_places365_lists(tmp_path / "p")
    (root / "data_256").rename(root / "data_256_standard")  # what torchvision's download leaves
    data = instantiate(resolved(*PLACES, f"dataset.root={root}")["dataset"], num_workers=0)
    assert data.train_set.samples[0][0] == str(root / "data_256_standard/a/class_0/00000001.jpg")
    large = make_places365_lists(tmp_path / "q", large=True)
    data = instantiate(resolved(*PLACES, f"dataset.root={large}", "dataset.small=false")["dataset"], num_workers=0)
    assert data.test_set.samples[0][0] == str(large / "val_large/Places365_val_00000001.jpg")


@pytest.mark.parametrize("fault, message", [
    ("no_categories", r"categories_places365.txt does not exist"),
    ("no_val_list", r"places365_val.txt does not exist"),
    ("bad_line", r"places365_train_standard.txt line 2: '/a/class_0/00000002.jpg' is not '<image path> <label"),
    ("label_beyond", r"places365_val.txt line 1: 'Places365_val_00000001.jpg 3' is not .*label below 3"),
    ("no_images", r"no image folder .*data_256 or .*data_256_standard; unpack train_256"),
    ("first_image_missing", r"00000001.jpg, the first image places365_train_standard.txt lists, does not exist"),
    ("class_count", r"categories_places365.txt has 3 classes but dataset.num_classes=4"),
])
def test_places365_list_faults_are_one_line_naming_the_file(tmp_path, fault, message):
    import shutil

    root = make_places365_lists(tmp_path / "p")
    extra = []
    if fault == "no_categories":
        (root / "categories_places365.txt").unlink()
    elif fault == "no_val_list":
        (root / "places365_val.txt").unlink()
    elif fault == "bad_line":
        lines = (root / "places365_train_standard.txt").read_text().splitlines()
        lines[1] = lines[1].split()[0]
        (root / "places365_train_standard.txt").write_text("\n".join(lines))
    elif fault == "label_beyond":
        (root / "places365_val.txt").write_text("Places365_val_00000001.jpg 3\n")
    elif fault == "no_images":
        shutil.rmtree(root / "data_256")
    elif fault == "first_image_missing":
        (root / "data_256/a/class_0/00000001.jpg").unlink()
    else:
        extra = ["dataset.num_classes=4"]
    from lgm_gcp.data.check import check_dataset

    cfg = resolved(*PLACES, f"dataset.root={root}", *extra)["dataset"]
    for attempt in (lambda: check_dataset(cfg), lambda: instantiate(cfg, num_workers=0)):  # before spawn, and at build
        with pytest.raises(DatasetError, match=message) as err:
            attempt()
        assert "\n" not in str(err.value)


def _epoch_in_a_job(root):
    data = instantiate(resolved(*FOLDER, f"dataset.root={root}")["dataset"], num_workers=2)
    return sum(len(y) for _, y in data.train_batches(4, seed=0, epoch=0))


@pytest.mark.slow  # a sweep, table or kill/resume test (the brief's slow tier)
def test_loader_workers_start_inside_a_joblib_sweep_job(tmp_path):
    """Hydra's joblib launcher runs each job in a loky process, whose default start method children
    cannot use (PyTorch #44687): the kept loaders start their workers by fork."""
    joblib = pytest.importorskip("joblib")
    make_tree(tmp_path / "t", per_class=4)
    assert joblib.Parallel(n_jobs=2, backend="loky")(joblib.delayed(_epoch_in_a_job)(tmp_path / "t")
                                                     for _ in range(2)) == [12, 12]


def test_libjpegs_corrupt_data_warnings_do_not_reach_stderr(tmp_path, capfd):
    """Ten stray bytes before the start-of-scan marker: libjpeg decodes the image and prints "Corrupt
    JPEG data: 10 extraneous bytes before marker 0xda" from C; the tensor decoder keeps stderr clean,
    as PIL does (a broken file's error stays one line)."""
    import io

    from torchvision.io import ImageReadMode, decode_jpeg

    buffer = io.BytesIO()
    smooth_image(np.random.default_rng(0), 40, 46).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    at = jpeg.index(b"\xff\xda")
    (tmp_path / "stray.jpg").write_bytes(jpeg[:at] + b"\x00" * 10 + jpeg[at:])
    capfd.readouterr()
    with pytest.warns(DeprecationWarning):  # the bare call, for comparison: libjpeg speaks on fd 2
        decode_jpeg(torch.frombuffer(bytearray((tmp_path / "stray.jpg").read_bytes()), dtype=torch.uint8),
                    mode=ImageReadMode.RGB)
    assert "Corrupt JPEG data: 10 extraneous bytes" in capfd.readouterr().err
    assert load_tensor(str(tmp_path / "stray.jpg")).shape == (3, 40, 46)
    assert capfd.readouterr().err == ""


def test_both_kinds_of_dataset_are_what_the_trainer_reads(tmp_path):
    """The trainer reads a dataset through TrainingData alone: image folders and the in-memory fast path
    both provide it, the held-out split and the skipped-image count included."""
    from lgm_gcp.data import TrainingData

    make_tree(tmp_path, classes=3, per_class=2)
    folders = folder_data(tmp_path, num_workers=0)
    digits = instantiate(resolved("dataset=digits")["dataset"], num_workers=0)
    assert isinstance(folders, TrainingData) and isinstance(digits, TrainingData)
    assert (folders.has_val, folders.skipped_images, digits.has_val, digits.skipped_images) == (False, [], False, None)
    assert not isinstance(object(), TrainingData)
