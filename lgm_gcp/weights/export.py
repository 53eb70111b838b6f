"""lgm-gcp-export: write an lgm-gcp checkpoint in a reference repository's layout, so that a model
trained here runs in the reference code.

    lgm-gcp-export outputs/2026-11-23/10-00-00 resnet50_gcp.pth                # best.pt, bare state dict
    lgm-gcp-export RUN_DIR model_best.pth.tar --which last --wrap dataparallel

``--wrap none`` writes the bare state dict fast-MPN-COV's model zoo and torchvision load;
``--wrap dataparallel`` writes ``{"state_dict": {"module.<key>": ...}}`` as GCP_Optimization, 3G-Net
and LargeMarginInSoftmax save and load it. The names are the inverse of ``layouts``: the iSQRT-COV /
3G-Net ResNets (``layer_reduce``, ``AtMp1-3``, ``fc``), the GCP study's MobileNetV2 and ShuffleNetV2
(``dimension_reduction``), VGG heads (``representation.conv_dr_block``, ``classifier.N``) and
LargeMarginInSoftmax's layer13 (``features.N``). Every export is checked by mapping its keys back
with the loader: a network with no reference layout is refused, never written with made-up names.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

from lgm_gcp.errors import CheckpointError, RunFolderError, UserError, fail, one_line_parser, output_path
from lgm_gcp.weights.files import read_file
from lgm_gcp.weights.layouts import THREE_G_BLOCK
from lgm_gcp.weights.load import match, model_tensors

PROG = "lgm-gcp-export"
BLOCK_NAMES = {ours: theirs for theirs, ours in THREE_G_BLOCK.items()}


def reference_names(model: torch.nn.Module, keys: list) -> dict:
    """lgm-gcp key -> the reference repository's key, for the network ``model``."""
    from lgm_gcp.models.backbones.cifar import Layer13
    from lgm_gcp.models.backbones.torchvision_nets import TorchvisionBackbone

    if not isinstance(model.backbone, (TorchvisionBackbone, Layer13)):
        raise CheckpointError(f"a {type(model.backbone).__name__} backbone has no reference layout to export to; "
                              "export covers the references' networks (torchvision backbones, layer13)")
    torchvision_whole = hasattr(getattr(model.backbone, "features", None), "conv1")  # ResNet, ShuffleNetV2
    post_layers = len(model.head.post)
    covariance_vgg = not torchvision_whole and hasattr(model.head, "reduce") and post_layers > 1
    out = {}
    for key in keys:
        if key.startswith("backbone.features."):
            name = key[len("backbone.features."):] if torchvision_whole else key[len("backbone."):]
        elif re.match(r"backbone\.\d", key):
            name = "features." + key[len("backbone."):]
        elif m := re.fullmatch(r"head\.reduce\.(\d+)\.(\w+)", key):
            index, tensor = m.groups()
            if torchvision_whole and not hasattr(model.backbone.features, "stage2"):
                name = ("layer_reduce." if index == "0" else "layer_reduce_bn.") + tensor
            else:
                block = "representation.conv_dr_block." if covariance_vgg else "dimension_reduction."
                name = f"{block}{index}.{tensor}"
        elif m := re.fullmatch(r"head\.blocks\.(\d+)\.(\w+\.\d+)\.(\w+)", key):
            block, layer, tensor = m.groups()
            name = f"AtMp{int(block) + 1}.{BLOCK_NAMES[layer]}.{tensor}"
        elif m := re.fullmatch(r"head\.post\.(\d+)\.(\w+)", key):
            name = f"classifier.{m.group(1)}.{m.group(2)}"
        elif m := re.fullmatch(r"criterion\.fc\.(\w+)", key):
            if torchvision_whole:
                name = f"fc.{m.group(1)}"
            else:
                name = f"classifier.{post_layers}.{m.group(1)}" if post_layers else f"classifier.{m.group(1)}"
        else:
            raise CheckpointError(f"{key}: this network has no reference layout to export to (a "
                                  f"{type(model.criterion).__name__} criterion or a head of lgm-gcp's own); "
                                  "export covers the references' networks")
        out[key] = name
    return out


def export_state_dict(model_state: dict, model: torch.nn.Module) -> dict:
    """The reference-layout state dict of ``model_state`` (an lgm-gcp state dict of ``model``)."""
    targets = model_tensors(model)
    names = reference_names(model, list(targets))
    exported = {names[k]: model_state[k] for k in targets}
    back = match(exported, targets)
    if back.missing or back.unexpected or back.mismatched or any(
            names[model_key] != file_key for model_key, file_key in back.filled.items()):
        raise CheckpointError(f"this network's export does not load back ({back.layout} layout); it has no "
                              "reference layout")
    return exported


def find_checkpoint(source: Path, which: str) -> Path:
    if source.is_dir():
        path = source / "checkpoints" / f"{which}.pt"
        if not path.is_file():
            raise RunFolderError(f"{source} has no checkpoints/{which}.pt; give a run folder or a checkpoint file")
        return path
    if not source.is_file():
        raise RunFolderError(f"{source} does not exist; give a run folder or an lgm-gcp checkpoint file")
    return source


def export(source: str | Path, target: str | Path, which: str = "best", wrap: str = "none") -> int:
    from lgm_gcp.models.build import build_model

    payload = read_file(find_checkpoint(Path(source), which))
    if not isinstance(payload, dict) or "config" not in payload or "model" not in payload:
        raise CheckpointError(f"{source} is not an lgm-gcp checkpoint (it has no 'config' and 'model')")
    cfg = payload["config"]
    with torch.device("meta"):
        model = build_model(cfg, cfg["dataset"]["num_classes"], cfg["dataset"]["in_channels"])
    state = export_state_dict(payload["model"], model)
    if wrap == "dataparallel":
        state = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(state, target)
    return len(payload["model"])


def cli(argv=None) -> None:
    parser = one_line_parser(PROG, description="Write an lgm-gcp checkpoint in a reference repository's layout.")
    parser.add_argument("source", help="a run folder (its checkpoints/best.pt or last.pt) or an lgm-gcp checkpoint")
    parser.add_argument("target", type=output_path, help="the file to write (must not exist)")
    parser.add_argument("--which", choices=("best", "last"), default="best", help="which checkpoint of a run folder")
    parser.add_argument("--wrap", choices=("none", "dataparallel"), default="none",
                        help="none: a bare state dict (fast-MPN-COV model zoo, torchvision); dataparallel: "
                             "{'state_dict': {'module.<key>': ...}} (GCP_Optimization, 3G-Net, LargeMarginInSoftmax)")
    args = parser.parse_args(argv)
    try:
        if Path(args.target).exists():
            raise CheckpointError(f"{args.target} exists; choose a new file name (nothing is overwritten)")
        export(args.source, args.target, args.which, args.wrap)
    except UserError as e:
        fail(PROG, e)
    print(f"{args.target}: written from {args.source}", file=sys.stderr)
