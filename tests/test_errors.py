"""The error contract, one parametrised test per class of bad input or fault.

Each case runs an entry point as a user would (in this process, for speed: ``cli()`` with its
arguments) and asserts the exit status, a single stderr line that names the value or the file, and
that no file already in the run folder changed. ``train.log`` may only grow (Hydra appends to it),
and ``.lock`` is the run's own lock file.
"""

import argparse
import io
import os
import pickle
import shutil
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from lgm_gcp.engine import checkpoint
from lgm_gcp.engine.train import run
from lgm_gcp.errors import CheckpointError, DatasetError, NonFiniteError, RunFolderError

from conftest import TINY, conf_options, resolved
from datafiles import make_tree

QUICK = [*TINY[:-1], "trainer.progress=false", "trainer.deterministic=true"]


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` (bar the lock) and its bytes."""
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def assert_unchanged(before: dict, folder: Path) -> None:
    after = snapshot(folder)
    for name, content in before.items():
        assert name in after, f"{name} was deleted"
        if name.endswith("train.log"):
            assert after[name].startswith(content), "train.log was rewritten, not appended to"
        else:
            assert after[name] == content, f"{name} changed"


def call(entry, argv, capfd, monkeypatch, cwd: Path):
    """Run a console entry point in this process: (exit status, non-empty stderr lines)."""
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["prog", *argv])
    capfd.readouterr()
    try:
        entry() if entry.__module__.endswith("entrypoint") else entry(list(argv))
        status = 0
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 1
    err = capfd.readouterr().err
    return status, [line for line in err.splitlines() if line.strip()]


def train_cli():
    from lgm_gcp.entrypoint import cli

    return cli


def assert_one_line(status, lines, expected_status, *fragments):
    assert status == expected_status, lines
    assert len(lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny finished run folder (2 epochs of 5 steps, best and last checkpoints)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run(resolved(*QUICK, "trainer.max_epochs=2", "trainer.max_steps=10", "trainer.checkpoint_every=3"), run_dir)
    return run_dir


@pytest.fixture
def run_copy(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


# ------------------------------------------------------------------- 1. nonsense values, refused at start-up

RANGE_CASES = [
    ("trainer.batch_size=-1",), ("trainer.batch_size=0",), ("trainer.grad_clip=-1",), ("trainer.grad_clip=0",),
    ("optimizer.weight_decay=-0.0001",), ("trainer.eval_every=0",), ("trainer.log_every=0",),
    ("trainer.eval_batch_size=-2",), ("trainer.max_epochs=0",), ("trainer.max_steps=0",),
    ("trainer.num_workers=-1",), ("trainer.checkpoint_every=-5",), ("trainer.ema_decay=1.5",),
    ("trainer.devices=0",), ("dataset=synthetic", "dataset.train_size=0"),
    ("dataset=synthetic", "dataset.test_size=-3"),
    ("dataset.image_size=0",), ("head.dropout=1.0",), ("head.dropout=-0.1",), ("loss.label_smoothing=1.5",),
    ("optimizer.momentum=1.0",), ("lr_policy.base_lr=0",), ("lr_policy.base_lr=-0.1",), ("head=gcp", "head.dim=0"),
    ("head=gcp", "head.iterations=0"), ("loss=lgm", "loss.sigma_init=0"), ("loss=lgm", "loss.margin.step=0"),
    ("loss=large_margin", "loss.reg_lambda=-1"), ("seed=-1",), ("lr_policy=multistep", "lr_policy.gamma=0"),
    ("loss=lgm", "loss.sigma_offset=-1"), ("loss=lgm", "loss.sigma_init=-1"),
]
CHOICE_CASES = [("eval.ten_crop_average=mean",), ("head=gcp", "head.activation=gelu"), ("trainer.accelerator=tpu",),
                ("loss=lgm", "loss.margin.policy=STEPDOWN"), ("dataset.pad_mode=reflect",), ("loss.init=xavier",),
                ("backbone.norm=layer",), ("head=gcp", "head.algorithm=svd"),
                ("dataset=imagenet", "dataset.decoder=cv2"), ("dataset=places365", "dataset.layout=lists"),
                ("head=gcp", "head.sqrt=svd"), ("head=gcp", "head.vec_order=diag"),
                ("loss=lgm", "loss.covariance=full"), ("loss=lgm", "loss.likelihood_form=log"),
                ("loss=lgm", "loss.sigma_param=exp")]


@pytest.mark.parametrize("overrides", RANGE_CASES, ids=[" ".join(c) for c in RANGE_CASES])
def test_out_of_range_values_are_refused_in_one_line(overrides, capfd, monkeypatch, tmp_path):
    status, lines = call(train_cli(), overrides, capfd, monkeypatch, tmp_path)
    assert_one_line(status, lines, 2, overrides[-1], "out of range")
    assert not (tmp_path / "outputs").exists()  # nothing ran, nothing was written


@pytest.mark.parametrize("overrides", CHOICE_CASES, ids=[" ".join(c) for c in CHOICE_CASES])
def test_unknown_string_values_are_refused_in_one_line(overrides, capfd, monkeypatch, tmp_path):
    status, lines = call(train_cli(), overrides, capfd, monkeypatch, tmp_path)
    assert_one_line(status, lines, 2, overrides[-1], "is not valid; choose one of")
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("key, home", [("optimizer.lr", "lr_policy.base_lr"), ("trainer.epochs", "trainer.max_epochs")])
def test_a_key_kept_elsewhere_is_refused_naming_where(key, home, capfd, monkeypatch, tmp_path):
    """Where timm, torch or Lightning users look first: the line says where this config keeps it."""
    status, lines = call(train_cli(), ["optimizer=adamw", f"{key}=7"], capfd, monkeypatch, tmp_path)
    assert_one_line(status, lines, 2, f"unknown key '{key}'", f"set {home}=7")


@pytest.mark.parametrize("value", ["four", "Auto"])
def test_a_word_other_than_auto_for_a_count_is_refused_in_one_line(value, capfd, monkeypatch, tmp_path):
    status, lines = call(train_cli(), [f"trainer.num_workers={value}"], capfd, monkeypatch, tmp_path)
    assert_one_line(status, lines, 2, f"trainer.num_workers={value} is not valid; give a number >= 0, or auto")


# ------------------------------------------------------------------- 2. checked before spawning workers

def spawn_cases(tmp_path):
    make_tree(tmp_path / "tree")
    (tmp_path / "empty" / "train" / "c0").mkdir(parents=True)
    (tmp_path / "empty" / "val").mkdir()
    folder = ["dataset=imagenet", "dataset.num_classes=3", "dataset.image_size=32"]
    return {
        "batch_not_divisible": (["trainer.devices=2", "trainer.batch_size=63"], "trainer.batch_size=63"),
        "batch_not_divisible_3": (["trainer.devices=3", "trainer.batch_size=64"], "divisible by the 3 processes"),
        "missing_folder": (["trainer.devices=2", *folder, f"dataset.root={tmp_path / 'nowhere'}"], "nowhere/train"),
        "no_images": (["trainer.devices=2", *folder, f"dataset.root={tmp_path / 'empty'}"], "empty/train holds no"),
        "missing_cifar": (["trainer.devices=2", "dataset=cifar10", f"dataset.root={tmp_path / 'none'}"],
                          "data_batch_1"),
        "cuda_without_gpu": (["trainer.devices=2", "trainer.accelerator=cuda"], "trainer.accelerator=cuda"),
    }


@pytest.mark.parametrize("case", ["batch_not_divisible", "batch_not_divisible_3", "missing_folder", "no_images",
                                  "missing_cifar", "cuda_without_gpu"])
def test_what_can_be_checked_before_spawning_is(case, capfd, monkeypatch, tmp_path):
    if case == "cuda_without_gpu" and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    overrides, fragment = spawn_cases(tmp_path)[case]
    status, lines = call(train_cli(), [*QUICK, *overrides, "hydra.run.dir=run"], capfd, monkeypatch, tmp_path)
    assert_one_line(status, lines, 1, fragment)
    assert not (tmp_path / "run" / "metrics.json").exists()  # no worker started training


@pytest.mark.slow
def test_an_error_inside_a_worker_reaches_the_user_as_one_line(capfd, monkeypatch, tmp_path):
    """A resume refused inside the DDP workers (the config changed) is one line, not a traceback."""
    ddp = [*QUICK, "trainer.devices=2", "backbone.norm=group", "hydra.run.dir=run"]
    assert call(train_cli(), [*ddp, "trainer.max_steps=5"], capfd, monkeypatch, tmp_path)[0] == 0
    status, lines = call(train_cli(), [*ddp, "optimizer.weight_decay=0.001"], capfd, monkeypatch, tmp_path)
    assert_one_line(status, lines, 1, "cannot resume from", "optimizer.weight_decay: 0.0005 -> 0.001")


# ------------------------------------------------------------------- 3. data errors name the file

def bad_image(path: Path, kind: str) -> None:
    good = next((path.parent.parent / "class_1").glob("*.png")).read_bytes()
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(good)).save(jpeg, "JPEG")
    jpeg = jpeg.getvalue()
    path.write_bytes({"zero_bytes": b"", "truncated": good[: len(good) // 3], "not_an_image": b"hello, world\n" * 40,
                      "garbage_png": b"\x89PNG\r\n\x1a\n" + os.urandom(200), "truncated_jpeg": jpeg[: len(jpeg) // 2],
                      "garbage_jpeg": jpeg[:3] + os.urandom(300)}[kind])


@pytest.mark.parametrize("kind, decoder", [(k, "tensor") for k in ("zero_bytes", "truncated", "not_an_image",
                                                                     "garbage_png", "truncated_jpeg", "garbage_jpeg")]
                         + [("truncated_jpeg", "pil")])
def test_an_undecodable_image_is_named_in_one_line_or_skipped_and_counted(kind, decoder, capfd, monkeypatch,
                                                                          tmp_path):
    make_tree(tmp_path / "tree", per_class=4)
    bad = tmp_path / "tree" / "train" / "class_0" / ("bad.jpg" if "jpeg" in kind else "bad.png")
    bad_image(bad, kind)
    folder = ["dataset=imagenet", "dataset.num_classes=3", "dataset.image_size=32", "dataset.resize=36",
              f"dataset.root={tmp_path / 'tree'}", "backbone=resnet20", "backbone.width=4", "trainer.batch_size=13",
              "trainer.max_epochs=1", "trainer.progress=false", f"dataset.decoder={decoder}"]
    status, lines = call(train_cli(), [*folder, "hydra.run.dir=strict"], capfd, monkeypatch, tmp_path)
    assert_one_line(status, lines, 1, str(bad), "dataset.skip_bad_images=true")
    summary = run(resolved(*folder, "dataset.skip_bad_images=true"), tmp_path / "skip")
    assert summary["status"] == "finished" and summary["epochs"][0]["skipped_images"] == 1
    assert summary["epochs"][0]["train_images"] == 12  # the 13-image batch less the bad one


def test_an_undecodable_image_in_a_loader_worker_is_named_too(tmp_path):
    make_tree(tmp_path / "tree", per_class=4)
    bad = tmp_path / "tree" / "val" / "class_2" / "bad.png"
    bad.write_bytes(b"")
    cfg = resolved("dataset=imagenet", "dataset.num_classes=3", "dataset.image_size=32", "dataset.resize=36",
                   f"dataset.root={tmp_path / 'tree'}", "trainer.num_workers=1")
    from lgm_gcp.options.instantiate import instantiate

    data = instantiate(cfg["dataset"], num_workers=1)
    with pytest.raises(DatasetError) as err:
        list(data.test_batches(4))
    assert str(err.value).startswith(str(bad)) and "\n" not in str(err.value)


@pytest.mark.parametrize("case", ["unreachable", "not_installed"])
def test_a_tracker_that_cannot_start_is_one_line_before_anything_is_written(case, capfd, monkeypatch, tmp_path):
    overrides = ["logger=[tensorboard,mlflow]", "hydra.run.dir=run", *TINY]
    if case == "unreachable":
        overrides.append("logger.mlflow.tracking_uri=nosuchscheme://nowhere")
        expected = "logger.mlflow could not start"
    else:
        monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
        monkeypatch.setitem(sys.modules, "mlflow.entities", None)
        expected = 'logger=mlflow needs MLflow: pip install "lgm-gcp[mlflow]"'
    status, lines = call(train_cli(), overrides, capfd, monkeypatch, tmp_path)
    assert_one_line(status, lines, 1, expected)
    assert not (tmp_path / "run" / "config.yaml").exists() and not (tmp_path / "run" / "checkpoints").exists()


# ------------------------------------------------------------------- 4. every entry point, one contract

def garbage(path: Path, text: str = "{{{: not yaml [") -> Path:
    path.write_text(text)
    return path


def entry(name):
    import importlib

    module = {"table": "lgm_gcp.analysis.table", "detect": "lgm_gcp.detection.evaluate",
              "features": "lgm_gcp.analysis.features", "plot_lr": "lgm_gcp.schedules.plot",
              "convert": "lgm_gcp.weights.files", "export": "lgm_gcp.weights.export",
              "robustness": "lgm_gcp.robustness.evaluate"}[name]
    return importlib.import_module(module).cli


ENTRY_CASES = {
    # name: (entry point, argv builder (tmp, run) -> argv, fragment builder, status)
    "table_missing_folder": ("table", lambda t, r: [str(t / "nope")], lambda t, r: str(t / "nope"), 1),
    "table_garbage_config": ("table", lambda t, r: [str(r)] if garbage(r / "config.yaml") else [],
                             lambda t, r: str(r / "config.yaml"), 1),
    "table_garbage_metrics": ("table", lambda t, r: [str(r)] if garbage(r / "metrics.json", "{truncated") else [],
                              lambda t, r: str(r / "metrics.json"), 1),
    "table_metrics_not_an_object": ("table", lambda t, r: [str(r)] if garbage(r / "metrics.json", "[1, 2]") else [],
                                    lambda t, r: str(r / "metrics.json"), 1),
    "table_unknown_table": ("table", lambda t, r: [str(r), "table=nope"], lambda t, r: "unknown table 'nope'", 1),
    "table_out_in_missing_folder": ("table", lambda t, r: [str(r), "--out", str(t / "no" / "such")],
                                    lambda t, r: str(t / "no"), 2),
    "detect_missing_folder": ("detect", lambda t, r: [str(t / "nope")], lambda t, r: str(t / "nope"), 1),
    "detect_not_a_run": ("detect", lambda t, r: [str(t)], lambda t, r: "has no config.yaml", 1),
    "detect_garbage_config": ("detect", lambda t, r: [str(r)] if garbage(r / "config.yaml") else [],
                              lambda t, r: str(r / "config.yaml"), 1),
    "detect_config_not_a_mapping": ("detect", lambda t, r: [str(r)] if garbage(r / "config.yaml", "- a\n- b\n") else [],
                                    lambda t, r: str(r / "config.yaml"), 1),
    "detect_zero_max_images": ("detect", lambda t, r: [str(r), "--max-images", "0"], lambda t, r: "--max-images", 2),
    "detect_epsilon_above_one": ("detect", lambda t, r: [str(r), "--epsilon", "2"], lambda t, r: "--epsilon", 2),
    "detect_epsilon_not_a_number": ("detect", lambda t, r: [str(r), "--epsilon", "big"], lambda t, r: "'big'", 2),
    "features_missing_folder": ("features", lambda t, r: [str(t / "nope")], lambda t, r: str(t / "nope"), 1),
    "features_not_a_run": ("features", lambda t, r: [str(t)], lambda t, r: "has no config.yaml", 1),
    "plot_lr_zero_steps": ("plot_lr", lambda t, r: ["--steps-per-epoch", "0"], lambda t, r: "--steps-per-epoch", 2),
    "plot_lr_out_in_missing_folder": ("plot_lr", lambda t, r: ["--out", str(t / "no" / "lr.png")],
                                      lambda t, r: str(t / "no"), 2),
    "plot_lr_unknown_family": ("plot_lr", lambda t, r: ["--family", "vit"], lambda t, r: "'vit'", 2),
    "convert_missing_file": ("convert", lambda t, r: [str(t / "nope.pth"), str(t / "out.pth")],
                             lambda t, r: f"weights file {t / 'nope.pth'} does not exist", 1),
    "convert_onto_an_existing_file": ("convert", lambda t, r: [str(r / "checkpoints" / "last.pt"),
                                                                str(r / "config.yaml")],
                                      lambda t, r: "exists; choose a new file name", 1),
    "convert_not_a_checkpoint": ("convert", lambda t, r: [str(r / "config.yaml"), str(t / "out.pth")],
                                 lambda t, r: "is not a readable torch checkpoint", 1),
    "export_missing_run": ("export", lambda t, r: [str(t / "nope"), str(t / "out.pth")],
                           lambda t, r: str(t / "nope"), 1),
    "export_without_a_reference_layout": ("export", lambda t, r: [str(r), str(t / "out.pth")],
                                          lambda t, r: "no reference layout", 1),
    "export_onto_an_existing_file": ("export", lambda t, r: [str(r), str(r / "metrics.json")],
                                     lambda t, r: "exists; choose a new file name", 1),
    "robustness_missing_folder": ("robustness", lambda t, r: [str(t / "nope")], lambda t, r: str(t / "nope"), 1),
    "robustness_missing_baseline": ("robustness", lambda t, r: [str(r), "--baseline", str(t / "nope")],
                                    lambda t, r: str(t / "nope"), 1),
    "robustness_alexnet_on_a_subset": ("robustness", lambda t, r: [str(r), "--baseline", "alexnet", "--corruptions",
                                                                    "fog"], lambda t, r: "all 15 corruptions", 1),
    "robustness_alexnet_on_small_images": ("robustness", lambda t, r: [str(r), "--baseline", "alexnet",
                                                                        "--max-images", "1", "--perturbations"],
                                           lambda t, r: "imagenet protocol", 1),
    "robustness_unknown_corruption": ("robustness", lambda t, r: [str(r), "--corruptions", "rain"],
                                      lambda t, r: "'rain'", 2),
    "robustness_severity_six": ("robustness", lambda t, r: [str(r), "--severities", "6"], lambda t, r: "6", 2),
    "robustness_nothing_to_do": ("robustness", lambda t, r: [str(r), "--corruptions", "--perturbations"],
                                 lambda t, r: "nothing to evaluate", 1),
    "robustness_missing_frost_dir": ("robustness", lambda t, r: [str(r), "--frost-dir", str(t / "ice")],
                                     lambda t, r: str(t / "ice"), 1),
}


@pytest.mark.parametrize("case", sorted(ENTRY_CASES))
def test_analysis_entry_points_fail_in_one_line(case, run_copy, capfd, monkeypatch, tmp_path):
    name, argv, fragment, expected_status = ENTRY_CASES[case]
    args = argv(tmp_path, run_copy)
    before = snapshot(run_copy)
    status, lines = call(entry(name), args, capfd, monkeypatch, tmp_path)
    assert_one_line(status, lines, expected_status, fragment(tmp_path, run_copy))
    assert_unchanged(before, run_copy)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_refused_checkpoint_file_is_one_line(run_copy, capfd, monkeypatch, tmp_path):
    """A pickle that weights_only refuses (an argparse Namespace beside the weights) is never executed."""
    path = run_copy / "checkpoints" / "best.pt"
    torch.save({"model": {}, "optimizer": {}, "step": 0, "epoch": 0, "args": argparse.Namespace(lr=0.1)}, path)
    status, lines = call(entry("detect"), [str(run_copy)], capfd, monkeypatch, tmp_path)
    assert_one_line(status, lines, 1, str(path), "corrupt or truncated")


TRAIN_CASES = {
    "long_override_value": (lambda t: ["trainer.max_epochs=" + "9" * 5000], 2, "trainer.max_epochs=999"),
    "run_dir_is_a_file": (lambda t: ["hydra.run.dir=afile"], 1, "hydra.run.dir=afile is a file"),
    "run_dir_name_too_long": (lambda t: ["hydra.run.dir=" + "x" * 300], 1, "the file system allows"),
    "sweep_dir_is_a_file": (lambda t: ["-m", "seed=0,1", "hydra.sweep.dir=afile"], 1, "hydra.sweep.dir=afile"),
    "preset_with_a_clashing_option": (lambda t: ["experiment=lm_vgg16_bn_imagenet_softmax", "dataset=synthetic"], 2,
                                      "sets 'dataset.color_jitter', which dataset=synthetic does not have"),
    "config_dir_missing": (lambda t: ["--config-dir", str(t / "nope")], 2, "is not a folder"),
    "config_dir_with_bad_value": (lambda t: ["--config-dir", str(t), "trainer.grad_clip=-1"], 2,
                                  "trainer.grad_clip=-1"),
    "config_dir_with_unknown_option": (lambda t: ["--config-dir", str(t), "head=gpc"], 2, "unknown head option 'gpc'"),
    "backbone_target_not_importable": (lambda t: ["backbone._target_=lgm_gcp.nope.Net", "hydra.run.dir=r"], 2,
                                       "backbone._target_=lgm_gcp.nope.Net"),
    "loss_target_not_importable": (lambda t: ["loss._target_=lgm_gcp.losses.Nope", "hydra.run.dir=r"], 2,
                                   "loss._target_=lgm_gcp.losses.Nope"),
    "unknown_experiment": (lambda t: ["experiment=gcp_resnet51_gcp_norm"], 2, "unknown experiment option"),
    "unknown_logger": (lambda t: ["logger=[tensorboard,bogus]"], 2,
                       f"unknown logger option 'bogus'; valid: {', '.join(conf_options('logger'))}"),
    "null_group_option": (lambda t: ["experiment=null"], 2, "experiment=null: a group's option cannot be null; "
                          "~experiment leaves the group out"),
    "group_option_of_100000_characters": (lambda t: ["loss=" + "a" * 100_000], 2,
                                          "unknown loss option 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...' "
                                          f"(100,000 characters); valid: {', '.join(conf_options('loss'))}"),
    "amp_value": (lambda t: ["trainer.amp=fp8", "hydra.run.dir=r"], 2,
                  "trainer.amp=fp8 is not valid; choose one of false, bf16, fp16"),
    "weights_missing": (lambda t: ["weights=nope.pth", "hydra.run.dir=r"], 1, "weights file nope.pth does not exist"),
    "weights_not_a_checkpoint": (lambda t: ["weights=afile", "hydra.run.dir=r"], 1,
                                 "afile is not a readable torch checkpoint"),
    "eval_only_without_weights": (lambda t: ["eval.only=true", "hydra.run.dir=r"], 2, "give weights=FILE"),
    "value_of_100000_characters": (lambda t: ["weights=" + "w" * 100_000, "hydra.run.dir=r"], 2,
                                   "weights='wwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwww...' has 100,000 characters"),
    "dataset_root_of_100000_characters": (lambda t: ["dataset=mnist", "dataset.root=" + "r" * 100_000], 2,
                                          "dataset.root='rrrr"),
}


@pytest.mark.parametrize("argv,status,fragment", [
    ([], 2, "usage: lgm-gcp-eval FILE"), (["trainer.max_epochs=1"], 2, "the first argument must be the weights file"),
    (["nope.pth"], 2, "weights file nope.pth does not exist"),
])
def test_eval_entry_point_fails_in_one_line(argv, status, fragment, capfd, monkeypatch, tmp_path):
    from lgm_gcp.entrypoint import eval_cli

    got, lines = call(eval_cli, argv, capfd, monkeypatch, tmp_path)
    assert got == status and fragment in lines[0], lines
    assert len(lines) == 1 or fragment.startswith("usage")  # the usage text is the help, not an error
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_entry_point_fails_in_one_line(case, capfd, monkeypatch, tmp_path):
    argv, expected_status, fragment = TRAIN_CASES[case]
    (tmp_path / "afile").write_text("keep me")
    status, lines = call(train_cli(), [*argv(tmp_path), *QUICK], capfd, monkeypatch, tmp_path)
    assert_one_line(status, lines, expected_status, fragment)
    assert (tmp_path / "afile").read_text() == "keep me"


@pytest.mark.parametrize("change", ["backbone.widths=[8,8]", "head=gcp", "loss=lgm"])
def test_force_resume_across_an_architecture_change_is_one_line(change, run_copy, capfd, monkeypatch, tmp_path):
    before = snapshot(run_copy)
    overrides = [*QUICK, "trainer.max_epochs=3", change, "trainer.force_resume=true", f"hydra.run.dir={run_copy}"]
    status, lines = call(train_cli(), overrides, capfd, monkeypatch, tmp_path)
    assert_one_line(status, lines, 1, str(run_copy / "checkpoints" / "last.pt"), "do not fit this network")
    assert_unchanged(before, run_copy)


# ------------------------------------------------------------------- 5. library bugs keep their traceback

def test_a_bug_inside_the_library_keeps_its_traceback(capfd, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    status, lines = call(train_cli(), [*QUICK, "backbone._target_=helpers.BuggyBackbone", "hydra.run.dir=r"],
                         capfd, monkeypatch, tmp_path)
    assert status == 1 and any(line.startswith("Traceback") for line in lines)
    assert "ValueError: injected bug: shapes do not line up" in "\n".join(lines)


def test_a_constructor_bug_names_its_target(tmp_path):
    cfg = resolved(*QUICK, "head=gcp", "head.dim=8")
    cfg["head"]["dim"] = "eight"  # past validation: the constructor itself fails with a TypeError
    with pytest.raises(TypeError) as err:
        run(cfg, tmp_path)
    assert "while instantiating _target_=lgm_gcp.models.heads.covariance.IsqrtCovHead" in "".join(
        getattr(err.value, "__notes__", []))


# ------------------------------------------------------------------- 6. checkpoint recovery

CORRUPTIONS = {
    "zero_bytes": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:500]),
    "a_list": lambda p: torch.save([1, 2, 3], p),
    "a_tensor": lambda p: torch.save(torch.zeros(3), p),
    "a_dict_without_weights": lambda p: torch.save({"step": 3}, p),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_a_corrupt_last_checkpoint_falls_back_to_the_previous_one(kind, tmp_path, caplog):
    cfg = resolved(*QUICK, "trainer.max_epochs=3", "trainer.checkpoint_every=4")
    run(resolved(*QUICK, "trainer.max_epochs=3", "trainer.checkpoint_every=4", "trainer.max_steps=30"), tmp_path)
    last = tmp_path / "checkpoints" / "last.pt"
    CORRUPTIONS[kind](last)
    summary = run(cfg, tmp_path)
    assert summary["status"] == "finished" and [r["epoch"] for r in summary["epochs"]] == [0, 1, 2]
    assert "last-prev.pt" in caplog.text and str(last) in caplog.text


def test_a_non_finite_loss_names_the_checkpoint_with_the_last_finite_weights(tmp_path):
    run(resolved(*QUICK, "trainer.max_epochs=1"), tmp_path)
    with pytest.raises(NonFiniteError, match=r"the last finite weights are in .*last\.pt \(step 21\)"):
        run(resolved(*QUICK, "trainer.max_epochs=2", "lr_policy.base_lr=1e30", "trainer.force_resume=true"), tmp_path)
    with pytest.raises(NonFiniteError, match="the last finite weights are in no checkpoint yet"):
        run(resolved(*QUICK, "trainer.max_epochs=1", "lr_policy.base_lr=1e30"), tmp_path / "fresh")


# ------------------------------------------------------------------- 7. resume is exact in what it reports

@pytest.mark.parametrize("cut", [5, 25, 30])
def test_a_run_cut_mid_epoch_reports_the_same_metrics(cut, tmp_path):
    """Epoch records equal an uninterrupted run's, except for timings."""
    timing = ("train_time_s", "images_per_s")
    base = [*QUICK, "trainer.max_epochs=2", "trainer.checkpoint_every=5", "head.dropout=0.5"]
    straight = run(resolved(*base), tmp_path / "straight")
    run(resolved(*base, f"trainer.max_steps={cut}"), tmp_path / "cut")
    resumed = run(resolved(*base), tmp_path / "cut")
    assert len(resumed["epochs"]) == len(straight["epochs"]) == 2
    for a, b in zip(straight["epochs"], resumed["epochs"]):
        assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}


# ------------------------------------------------------------------- 8. one run folder, one writer

def test_a_config_dir_yaml_with_a_python_tag_is_one_line_and_never_executed(capfd, monkeypatch, tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "evil.yaml").write_text(
        "# @package _global_\nseed: !!python/object/apply:os.system [\"touch pwned\"]\n")
    status, lines = call(train_cli(), ["--config-dir", str(tmp_path), "experiment=evil", *QUICK], capfd, monkeypatch,
                         tmp_path)
    assert_one_line(status, lines, 2, f"{tmp_path / 'experiment' / 'evil.yaml'}, line 2",
                    "no tags that build Python objects")
    assert not (tmp_path / "pwned").exists()


def test_a_second_start_into_a_live_run_is_refused_and_touches_nothing(run_copy, capfd, monkeypatch, tmp_path):
    from lgm_gcp.engine.runlock import RunLock

    live_tmp = run_copy / "checkpoints" / ".last.pt.tmp999"
    live_tmp.write_bytes(b"being written")
    before = snapshot(run_copy)
    with RunLock(run_copy):  # the live run
        status, lines = call(train_cli(), [*QUICK, "trainer.max_epochs=3", f"hydra.run.dir={run_copy}"],
                             capfd, monkeypatch, tmp_path)
        assert_one_line(status, lines, 1, str(run_copy), "in use by a live run")
        with pytest.raises(RunFolderError, match="in use by a live run"):
            run(resolved(*QUICK, "trainer.max_epochs=3"), run_copy)
    assert_unchanged(before, run_copy)
    assert live_tmp.read_bytes() == b"being written"


def test_a_stale_lock_from_a_killed_run_does_not_block_the_rerun(run_copy):
    (run_copy / ".lock").write_text("12345")  # left by a killed process: nobody holds the lock
    (run_copy / "checkpoints" / ".last.pt.tmp12345").write_bytes(b"half")
    summary = run(resolved(*QUICK, "trainer.max_epochs=3"), run_copy)
    assert summary["status"] == "finished" and not list((run_copy / "checkpoints").glob(".*tmp*"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_payload_types_are_checked(tmp_path):
    path = tmp_path / "x.pt"
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match=r"holds a list, not an lgm-gcp training checkpoint"):
        checkpoint.load(path)
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        checkpoint.load(path)
