"""Released checkpoints: every reference layout loads into its preset's network, value for value.

tests/data/checkpoints/*.tsv list every state-dict key and shape of the reference classes (copied from
the spec's dumps of the reference models). Each test writes a file with exactly those keys and shapes
in the repository's own file structure (``module.`` prefixes where its trainer put them, the extra
entries it saved, the legacy or zip format), every tensor filled with values that identify it, loads
it into the preset's network and checks where every value landed.
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import pytest
import torch

from lgm_gcp.analysis.table import cli as table_cli
from lgm_gcp.config.metafile import load_metafile
from lgm_gcp.errors import CheckpointError
from lgm_gcp.models.build import build_model
from lgm_gcp.options.instantiate import instantiate
from lgm_gcp.weights.export import export, export_state_dict
from lgm_gcp.weights.files import convert, read_state_dict, strip_module
from lgm_gcp.weights.load import load_weights, match, model_tensors, vector_permutation

from conftest import resolved, run_command

TSV_DIR = Path(__file__).parent / "data" / "checkpoints"

# TSV -> (the preset that builds its network, how the repository saved it)
RELEASES = {
    **{f"gcp__{n}": (f"gcp_{p}_norm", "gcp") for n, p in [
        ("resnet18", "resnet18_gap"), ("resnet34", "resnet34_gap"), ("resnet50", "resnet50_gap"),
        ("resnet101", "resnet101_gap"), ("resnet18_mpncov", "resnet18_gcp"), ("resnet34_mpncov", "resnet34_gcp"),
        ("resnet50_mpncov", "resnet50_gcp"), ("resnet101_mpncov", "resnet101_gcp"),
        ("resnet50_mpncov_128", "resnet50_gcp128"), ("mobilenet_v2", "mobilenet_v2_gap"),
        ("mobilenet_v2_mpncov", "mobilenet_v2_gcp"), ("mobilenet_v2_mpncov_128", "mobilenet_v2_gcp128"),
        ("shufflenet_v2_x1_0", "shufflenet_v2_gap"), ("shufflenet_v2_mpncov_x1_0", "shufflenet_v2_gcp")]},
    "3gnet__resnet50_3g": ("g3_resnet50_imagenet", "gcp"), "3gnet__resnet101_3g": ("g3_resnet101_imagenet", "gcp"),
    "3gnet__resnet50_3g_365": ("g3_resnet50_places365", "gcp"),
    "3gnet__resnet101_3g_365": ("g3_resnet101_places365", "gcp"),
    "fastmpncov__mpncovresnet50": ("gcp_resnet50_gcp_norm", "model_zoo"),
    "fastmpncov__mpncovresnet101": ("gcp_resnet101_gcp_norm", "model_zoo"),
    "fastmpncov__mpncovresnet50__mainpy_layout": ("gcp_resnet50_gcp_norm", "mainpy"),
    "fastmpncov__mpncovresnet101__mainpy_layout": ("gcp_resnet101_gcp_norm", "mainpy"),
    "fastmpncov__mpncovvgg16_bn": ("isqrt_vgg16_bn_imagenet", "vgg_zoo"),
    "lms__layer13_cifar10": ("lm_layer13_cifar10_softmax", "lms"),
    "lms__layer13_cifar100": ("lm_layer13_cifar100_softmax", "lms"),
    "lms__vgg16bow_bn": ("lm_vgg16_mod_imagenet_softmax", "lms"),
}
SMALL = ["lms__layer13_cifar10", "gcp__mobilenet_v2", "gcp__shufflenet_v2_x1_0"]  # the fast tier's real files


def tsv_shapes(name: str) -> dict:
    rows = (line.split("\t") for line in (TSV_DIR / f"{name}.tsv").read_text().splitlines()[1:])
    return {k: () if s == "scalar" else tuple(int(x) for x in s.split("x")) for k, s in rows}


def identifying_tensors(shapes: dict) -> dict:
    """Tensor i holds i + j/(n+1) at its j-th element (float32), so ⌊value⌋ names the tensor and the
    fraction its element; BatchNorm counters hold i."""
    out = {}
    for i, (key, shape) in enumerate(shapes.items()):
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(i, dtype=torch.int64)
        else:
            n = max(1, int(torch.Size(shape).numel()))
            out[key] = (i + torch.arange(n, dtype=torch.float64) / (n + 1)).float().reshape(shape)
    return out


def write_release(name: str, structure: str, path: Path) -> dict:
    """The file the repository would have written; returns its tensors under their bare keys."""
    tensors = identifying_tensors(tsv_shapes(name))
    if structure == "model_zoo":  # fast-MPN-COV model zoo: a bare state dict
        torch.save(tensors, path)
    elif structure == "vgg_zoo":  # fast-MPN-COV VGG-D: bare, only `features` DataParallel-wrapped
        torch.save({k.replace("features.", "features.module.", 1): v for k, v in tensors.items()}, path)
    elif structure == "mainpy":  # fast-MPN-COV main.py: the TSV keys carry features.module. already
        torch.save({"epoch": 65, "arch": "mpncovresnet50", "state_dict": tensors, "best_prec1": torch.tensor(78.2),
                    "optimizer": {"state": {}, "param_groups": []}}, path, _use_new_zipfile_serialization=False)
        tensors = {strip_module(k): v for k, v in tensors.items()}
    elif structure == "gcp":  # GCP_Optimization and 3G-Net: whole-model DataParallel, legacy format
        torch.save({"epoch": 100, "arch": name, "state_dict": {f"module.{k}": v for k, v in tensors.items()},
                    "best_acc1": torch.tensor([12.5]), "optimizer": {"state": {}, "param_groups": []}}, path,
                   _use_new_zipfile_serialization=False)
    elif structure == "lms":  # LargeMarginInSoftmax: DDP `module.`, and an argparse.Namespace beside
        torch.save({"epoch": 50, "arch": "layer13", "state_dict": {f"module.{k}": v for k, v in tensors.items()},
                    "stats": {"best": 7.8}, "optimizer": {"state": {}, "param_groups": []},
                    "args": argparse.Namespace(lr=0.1, arch="layer13")}, path)
    return tensors


def preset_model(preset: str, device: str = "cpu"):
    cfg = resolved(f"experiment={preset}")
    with torch.device(device):
        return build_model(cfg, cfg["dataset"]["num_classes"], cfg["dataset"]["in_channels"])


def readable(name: str, structure: str, tmp_path: Path) -> Path:
    """The release written to disk, converted first where weights_only refuses it (the LMS Namespace)."""
    path = tmp_path / f"{name}.pth.tar"
    write_release(name, structure, path)
    if structure == "lms":
        with pytest.raises(CheckpointError, match="argparse.Namespace.*lgm-gcp-convert"):
            read_state_dict(path)
        convert(path, tmp_path / f"{name}.converted.pth")
        return tmp_path / f"{name}.converted.pth"
    return path


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_every_release_layout_maps_with_nothing_missing_or_left_over(name):
    """Shapes only (meta tensors): every tensor of the preset's network is named by the TSV, every
    TSV tensor fills one, with the same shape."""
    preset, _ = RELEASES[name]
    state = {strip_module(k): torch.empty(s, device="meta") for k, s in tsv_shapes(name).items()}
    m = match(state, model_tensors(preset_model(preset, "meta")))
    assert (m.missing, m.unexpected, m.mismatched) == ([], [], [])
    assert len(m.filled) == len(state)


# Spot checks written from the spec's layer descriptions (checkpoints/README.md section 5), independent
# of the loader's rules: (file key, the lgm-gcp module path it must land in).
LANDMARKS = {
    "gcp__resnet50_mpncov": [("layer3.4.conv2.weight", "backbone.features.layer3.4.conv2.weight"),
                             ("layer_reduce.weight", "head.reduce.0.weight"),
                             ("layer_reduce_bn.running_var", "head.reduce.1.running_var"),
                             ("fc.weight", "criterion.fc.weight")],
    "3gnet__resnet50_3g": [("AtMp2.map21.weight", "head.blocks.1.inject.0.weight"),
                           ("AtMp3.atmap3.weight", "head.blocks.2.scale.0.weight"),
                           ("AtMp1.bnat1.bias", "head.blocks.0.squeeze.1.bias"),
                           ("AtMp1.map4.weight", "head.blocks.0.h2.0.weight")],
    "gcp__mobilenet_v2": [("features.18.0.weight", "backbone.features.18.0.weight"),
                          ("classifier.1.weight", "criterion.fc.weight")],
    "gcp__shufflenet_v2_mpncov_x1_0": [("stage2.0.branch1.2.weight", "backbone.features.stage2.0.branch1.2.weight"),
                                       ("dimension_reduction.0.weight", "head.reduce.0.weight")],
    "fastmpncov__mpncovresnet50__mainpy_layout": [("features.module.4.0.conv1.weight",
                                                   "backbone.features.layer1.0.conv1.weight"),
                                                  ("representation.conv_dr_block.1.weight", "head.reduce.1.weight"),
                                                  ("classifier.weight", "criterion.fc.weight")],
    "fastmpncov__mpncovvgg16_bn": [("features.41.running_mean", "backbone.features.41.running_mean"),
                                   ("classifier.3.weight", "head.post.3.weight"),
                                   ("classifier.6.bias", "criterion.fc.bias")],
    "lms__layer13_cifar10": [("features.20.weight", "backbone.20.weight"),
                             ("classifier.weight", "criterion.fc.weight")],
    "lms__vgg16bow_bn": [("features.43.weight", "backbone.features.43.weight"),
                         ("classifier.1.running_var", "head.post.1.running_var"),
                         ("classifier.3.weight", "criterion.fc.weight")],
}


def check_release(name: str, tmp_path: Path) -> None:
    preset, structure = RELEASES[name]
    path = readable(name, structure, tmp_path)
    tensors = {strip_module(k): v for k, v in identifying_tensors(tsv_shapes(name)).items()}
    model = preset_model(preset)
    info = load_weights(model, path)
    state = model.state_dict()
    for file_key, model_key in LANDMARKS.get(name, []):
        assert torch.equal(state[model_key], tensors[strip_module(file_key)]), (file_key, model_key)
    # The reference classes and lgm-gcp's modules register the same layers in the same order (backbone,
    # reduction, re-weighting blocks, MLP, classifier), so the i-th model tensor must hold the file's i-th
    # tensor, whole: a rename that swaps two layers of equal shape fails here.
    # (fast-MPN-COV's main.py Newmodel registers its classifier before the representation: in forward
    # order, features -> representation -> classifier, they line up too.)
    model_order = list(model_tensors(model).items())
    file_order = sorted(tensors.items(), key=lambda kv: kv[0].startswith("classifier") and structure == "mainpy")
    assert len(model_order) == len(file_order)
    for (key, value), (file_key, expected) in zip(model_order, file_order):
        assert torch.equal(value.detach(), expected), f"{key} does not hold {file_key}"
    assert info["permuted"] is None  # every preset vectorises as its reference does
    if structure in ("model_zoo", "gcp"):  # round trip: export gives the file's tensors under its names back
        exported = export_state_dict(model.state_dict(), model)
        assert set(exported) == set(tensors)
        assert all(torch.equal(exported[k], tensors[k]) for k in tensors)


@pytest.mark.parametrize("name", SMALL)
def test_small_releases_load_value_for_value(name, tmp_path):
    check_release(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(RELEASES) - set(SMALL)))
def test_every_release_loads_value_for_value(name, tmp_path):
    check_release(name, tmp_path)


def test_three_g_weights_in_a_row_order_head_give_the_same_logits(tmp_path):
    """3G-Net vectorises column by column: its classifier loaded into a row-order head is permuted,
    so the two heads compute the same logits on the same images."""
    overrides = ["dataset=synthetic", "backbone=resnet18", "head=3g", "head.dim=8", "dataset.num_classes=5"]
    torch.manual_seed(0)
    col = build_model(resolved(*overrides), 5, 3).eval()
    exported = export_state_dict(col.state_dict(), col)  # 3G-Net's names (AtMp1-3, column order)
    torch.save({"state_dict": {f"module.{k}": v for k, v in exported.items()}}, tmp_path / "3g.pth")
    row = build_model(resolved(*overrides, "head.vec_order=row"), 5, 3).eval()
    info = load_weights(row, tmp_path / "3g.pth")
    assert info["permuted"] == "criterion.fc.weight: col -> row order"
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(row(images), col(images))


def test_vector_permutation_of_the_spec_example():
    """checkpoints/README.md section 5: for d = 4 the row-order head takes 3G columns [0, 1, 3, 6, 2, 4, 7, 5, 8, 9]."""
    assert vector_permutation(4, "col", "row").tolist() == [0, 1, 3, 6, 2, 4, 7, 5, 8, 9]


def test_a_checkpoint_of_another_network_is_refused_naming_the_offenders(tmp_path):
    path = readable("gcp__resnet50_mpncov", "gcp", tmp_path)
    with pytest.raises(CheckpointError, match=r"96 model tensors not in the file \(head.blocks.0.p1.0.weight"):
        load_weights(preset_model("g3_resnet50_imagenet"), path)


@pytest.mark.slow  # a sweep, table or kill/resume test (the brief's slow tier)
def test_eval_runs_a_release_and_the_table_shows_it_beside_ours(tmp_path):
    """lgm-gcp-eval FILE [overrides]: no training, the run folder's metrics.json has the test top-1 of
    the loaded weights, and the table puts it in the released column."""
    overrides = ["dataset=synthetic", "backbone=resnet18", "head=gcp", "head.dim=8", "trainer.progress=false",
                 "dataset.test_size=64"]
    torch.manual_seed(0)
    model = build_model(resolved(*overrides), 10, 3)
    release = {f"module.{k}": v for k, v in export_state_dict(model.state_dict(), model).items()}
    torch.save({"state_dict": release, "epoch": 100}, tmp_path / "ResNet18_GCP.pth.tar",
               _use_new_zipfile_serialization=False)
    eval_cmd = [sys.executable, "-c", "from lgm_gcp.entrypoint import eval_cli; eval_cli()",
                str(tmp_path / "ResNet18_GCP.pth.tar"), *overrides, f"hydra.run.dir={tmp_path / 'eval'}"]
    done = run_command(eval_cmd, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["status"] == "evaluated" and metrics["weights"]["source"] == "released"
    assert metrics["weights"]["layout"] == "reference" and len(metrics["epochs"]) == 1
    with torch.no_grad():  # the same images through the same weights give the recorded accuracy
        data = instantiate(resolved(*overrides)["dataset"], num_workers=0)
        correct = total = 0
        model.eval()
        for images, labels in data.test_batches(64, rank=0, world_size=1, device=torch.device("cpu")):
            correct += (model(images).argmax(1) == labels).sum().item()
            total += labels.numel()
    assert metrics["final"]["test_top1"] == pytest.approx(100 * correct / total)


def test_export_writes_an_lgm_gcp_checkpoint_in_the_gcp_layout(tmp_path):
    """lgm-gcp-export on a run's checkpoint ({"config", "model", ...}): the GCP_Optimization wrapping,
    keys as resnet18_mpncov names them, values those of the run's model."""
    cfg = resolved("dataset=synthetic", "backbone=resnet18", "head=gcp", "head.dim=8")
    model = build_model(cfg, 10, 3)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"config": cfg, "model": model.state_dict(), "optimizer": {}, "step": 5, "epoch": 1},
               tmp_path / "run" / "checkpoints" / "best.pt")
    export(tmp_path / "run", tmp_path / "model_best.pth.tar", wrap="dataparallel")
    written = torch.load(tmp_path / "model_best.pth.tar", weights_only=True)["state_dict"]
    assert torch.equal(written["module.layer_reduce.weight"], model.head.reduce[0].weight)
    assert torch.equal(written["module.layer4.1.bn2.running_mean"], model.backbone.features.layer4[1].bn2.running_mean)
    assert torch.equal(written["module.fc.bias"], model.criterion.fc.bias)
    assert len(written) == len(model_tensors(model))


def test_export_refuses_a_network_without_a_reference_layout():
    model = build_model(resolved("loss=lgm"), 10, 1)
    with pytest.raises(CheckpointError, match="no reference layout"):
        export_state_dict(model.state_dict(), model)


def fake_run(folder: Path, status: str, top1: float, top5: float, weights: dict | None = None) -> None:
    """A run folder as lgm-gcp writes it (config, choices, metrics), for the table."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("seed: 0\n")
    choices = {"dataset": "imagenet", "backbone": "resnet50", "head": "gcp", "loss": "softmax", "lr_policy": "norm"}
    (folder / "choices.yaml").write_text("".join(f"{k}: {v}\n" for k, v in choices.items()))
    record = {"epoch": 0, "test_top1": top1, "test_top5": top5}
    metrics = {"status": status, "epochs": [record], "best": record, "final": record}
    if weights:
        metrics["weights"] = weights
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_table_shows_released_weights_beside_ours_and_the_paper(tmp_path, capsys):
    fake_run(tmp_path / "ours", "finished", 78.0, 93.9)
    fake_run(tmp_path / "released", "evaluated", 78.5, 94.1, {"source": "released", "layout": "reference"})
    fake_run(tmp_path / "own_eval", "evaluated", 11.0, 22.0, {"source": "lgm-gcp", "layout": "lgm-gcp"})
    table_cli([str(tmp_path), "table=gcp_imagenet", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    rows = load_metafile("gcp_study")["rows"]
    top1, top5 = next(r["published"] for r in rows if r["preset"] == "gcp_resnet50_gcp_norm")
    assert f"78.00 / 93.90 (n=1) · released 78.50 / 94.10 · paper {top1:.2f} / {top5:.2f}" in printed
    rows = {(r["row"], r["column"]): r for r in csv.DictReader(open(tmp_path / "gcp_imagenet.csv"))}
    cell = rows[("ResNet-50", "GCP norm")]
    assert (cell["n"], float(cell["test_top1_released"]), float(cell["test_top1_mean"])) == ("1", 78.5, 78.0)


def test_the_converter_writes_a_plain_state_dict_that_loads_with_weights_only(tmp_path):
    write_release("lms__layer13_cifar10", "lms", tmp_path / "lms.pth.tar")
    convert(tmp_path / "lms.pth.tar", tmp_path / "plain.pth")
    plain = torch.load(tmp_path / "plain.pth", weights_only=True)
    tensors = identifying_tensors(tsv_shapes("lms__layer13_cifar10"))
    assert list(plain) == list(tensors) and all(torch.equal(plain[k], tensors[k]) for k in tensors)


# ------------------------------------------------------------------ fine-grained presets: finetune=released file

FINE_GRAINED = {f"fg_{b}_{d}": tsv for b, tsv in [("resnet50", "fastmpncov__mpncovresnet50"),
                                                   ("resnet101", "fastmpncov__mpncovresnet101"),
                                                   ("vgg16_bn", "fastmpncov__mpncovvgg16_bn")]
                for d in ("cub", "aircraft", "cars")}


@pytest.mark.parametrize("preset", sorted(FINE_GRAINED))
def test_each_fine_grained_preset_fills_its_backbone_and_reduction_from_the_released_file(preset):
    """Shapes only (meta tensors): the released ImageNet file's keys fill every backbone tensor and the 1x1
    reduction of the preset's network; what is left of the file is its 1000-class classifier (VGG-D: the
    4096-4096 MLP too, which the fine-tuned network replaces by one Linear)."""
    from lgm_gcp.weights.load import finetune_match

    tsv = FINE_GRAINED[preset]
    state = {strip_module(k): torch.empty(s, device="meta") for k, s in tsv_shapes(tsv).items()}
    model = preset_model(preset, "meta")
    m = finetune_match(model, state, f"{tsv}.pth")
    filled = set(m.filled)
    assert {k for k in model_tensors(model) if k.startswith(("backbone.", "head."))} <= filled
    left = {f for f in state if m.renamed[f] not in filled}
    assert left == ({f"classifier.{i}.{t}" for i in (0, 3, 6) for t in ("weight", "bias")} if "vgg" in preset
                    else {"fc.weight", "fc.bias"})


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["fg_resnet50_cub", "fg_vgg16_bn_cars"])
def test_a_fine_grained_run_starts_from_the_released_file_value_for_value(preset, tmp_path):
    """The file written as the repository released it; every backbone and reduction tensor lands where its
    identifying values say, and the classifier is new (200 / 196 classes)."""
    from lgm_gcp.assemble import build_network

    tsv = FINE_GRAINED[preset]
    path = tmp_path / f"{tsv}.pth"
    tensors = write_release(tsv, "vgg_zoo" if "vgg" in preset else "model_zoo", path)
    cfg = resolved(f"experiment={preset}", f"finetune={path}")
    model, info = build_network(cfg, cfg["dataset"]["num_classes"], 3)
    state = model.state_dict()
    m = match(tensors, model_tensors(model))
    for model_key, file_key in m.filled.items():
        if not model_key.startswith("criterion."):
            torch.testing.assert_close(state[model_key], tensors[file_key], msg=model_key)
    assert info["new"] == ["criterion.fc.weight", "criterion.fc.bias"]
    assert state["criterion.fc.weight"].shape == (cfg["dataset"]["num_classes"], 32896)
