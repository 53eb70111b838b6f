"""Strict loading of a weight file into a built network, whatever repository wrote it.

``load_weights(model, path)`` reads the file (``files.read_state_dict``), renames its keys with the
layout that fits best (``layouts``), permutes the classifier's covariance columns when the file and
the head vectorise the matrix in different orders (3G-Net's column order against iSQRT-COV's row
order), and loads strictly: every tensor of the model is filled (a missing BatchNorm
``num_batches_tracked``, absent from pre-0.4.1 files, keeps the model's), every tensor of the file
is used, every shape agrees; otherwise one line names the first offenders of each kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from lgm_gcp.errors import CheckpointError, ConfigError
from lgm_gcp.weights.files import read_state_dict
from lgm_gcp.weights.layouts import LAYOUTS, file_vector_order

SHOWN = 3  # offenders named per kind in an error


@dataclass
class Match:
    layout: str
    renamed: dict  # file key -> model key
    filled: dict = field(default_factory=dict)  # model key -> file key, shapes equal
    unexpected: list = field(default_factory=list)  # file keys with no model tensor
    mismatched: list = field(default_factory=list)  # (file key, model key, file shape, model shape)
    missing: list = field(default_factory=list)  # model keys no file tensor fills


def model_tensors(model: torch.nn.Module) -> dict:
    """The model's state dict with each tensor once (a module registered under two names, such as
    the iSQRT-COV head's reduction block inside ``head.pool``, keeps its first name)."""
    seen, out = set(), {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            out[key] = tensor
    return out


def match(state: dict, targets: dict, layout: str | None = None, within: str = "") -> Match:
    """The layout (or the given one) that fills the most model tensors with equal shapes; with
    ``within``, only the file's tensors that land under that prefix count (the rest are left out)."""
    best = None
    for name, rename in LAYOUTS.items():
        if layout not in (None, name):
            continue
        m = Match(name, {k: v for k, v in rename(list(state)).items() if v.startswith(within)})
        for file_key, model_key in m.renamed.items():
            if model_key not in targets:
                m.unexpected.append(file_key)
            elif tuple(state[file_key].shape) != tuple(targets[model_key].shape):
                m.mismatched.append((file_key, model_key, tuple(state[file_key].shape),
                                     tuple(targets[model_key].shape)))
            else:
                m.filled[model_key] = file_key
        m.missing = [k for k in targets if k not in m.filled and not k.endswith("num_batches_tracked")]
        if best is None or len(m.filled) > len(best.filled):
            best = m
    return best


def _shape(shape: tuple) -> str:
    return "x".join(map(str, shape)) or "scalar"


def describe_problems(m: Match) -> str:
    parts = []
    if m.missing:
        parts.append(f"{len(m.missing)} model tensors not in the file ({', '.join(m.missing[:SHOWN])})")
    if m.unexpected:
        parts.append(f"{len(m.unexpected)} file tensors the model lacks ({', '.join(m.unexpected[:SHOWN])})")
    if m.mismatched:
        shown = ", ".join(f"{f} {_shape(a)} vs {k} {_shape(b)}" for f, k, a, b in m.mismatched[:SHOWN])
        parts.append(f"{len(m.mismatched)} shapes differ ({shown})")
    return "; ".join(parts)


def vector_permutation(dim: int, from_order: str, to_order: str) -> torch.Tensor:
    """Index p with v_to = v_from[p] for the d(d+1)/2 triangle vectors of a symmetric d×d matrix."""
    from lgm_gcp.models.heads.covariance import triangle_indices

    cpu = torch.device("cpu")
    src, dst = triangle_indices(dim, from_order, cpu), triangle_indices(dim, to_order, cpu)
    rows, cols = src // dim, src % dim
    position = {(min(r, c), max(r, c)): i for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist()))}
    return torch.tensor([position[(min(i // dim, i % dim), max(i // dim, i % dim))] for i in dst.tolist()])


def _head_order(model: torch.nn.Module) -> tuple:
    """(d, vectorisation order, the key of the first layer reading the vector) of a covariance head."""
    head = model.head
    cov = next((m for m in head.modules() if hasattr(m, "vec_order")), None)  # the CovarianceSqrt, if any
    if cov is None:
        return None
    first = "head.post.0.weight" if any(isinstance(m, torch.nn.Linear) for m in head.post.modules()) \
        else "criterion.fc.weight"
    return head.reduce[0].out_channels, cov.vec_order, first


def fitting_match(model: torch.nn.Module, state: dict, path: str | Path, layout: str | None = None) -> Match:
    """The layout that fills every tensor of ``model`` from ``state`` and uses all of it, or one line."""
    m = match(state, model_tensors(model), layout)
    if m.missing or m.unexpected or m.mismatched:
        raise CheckpointError(f"weights={path} does not fit this network (closest layout: {m.layout}): "
                              f"{describe_problems(m)}; check the experiment preset matches the checkpoint "
                              "(see docs/weights.md), or start from a backbone alone with "
                              "backbone.weights=FILE")
    return m


def check_weights(cfg: dict, model: torch.nn.Module) -> None:
    """Before any work: ``weights`` exists, loads and fits ``model`` (the network the config builds, on the
    meta device: shapes only); ``eval.only`` has weights to evaluate."""
    if not cfg.get("weights"):
        if cfg["eval"]["only"]:
            raise ConfigError("eval.only=true evaluates the weights of a file: give weights=FILE, or run "
                              "lgm-gcp-eval FILE")
        return
    fitting_match(model, read_state_dict(cfg["weights"]), cfg["weights"])


def load_backbone_weights(backbone: torch.nn.Module, path: str | Path) -> None:
    """``backbone.weights=FILE``: fill the backbone alone, strictly, from any file ``load_weights``
    reads (a torchvision model, a released checkpoint, an lgm-gcp run, a timm model); its head and
    classifier tensors are left out (and those a backbone names in ``file_keys_left_out``: a timm model's
    classifier): the usual start for fine-tuning on other classes."""
    state = read_state_dict(path)
    targets = {f"backbone.{k}": t for k, t in model_tensors(backbone).items()}
    m = match(state, targets, within="backbone.")
    left_out = tuple("backbone." + p for p in getattr(backbone, "file_keys_left_out", ()))
    m.unexpected = [k for k in m.unexpected if not m.renamed[k].startswith(left_out or ("\0",))]
    if m.missing or m.unexpected or m.mismatched:
        raise ConfigError(f"backbone.weights={path} does not fit this backbone (closest layout: {m.layout}): "
                          f"{describe_problems(m)}")
    backbone.load_state_dict({k[len("backbone."):]: state[f] for k, f in m.filled.items()}, strict=False)


def load_weights(model: torch.nn.Module, path: str | Path, layout: str | None = None) -> dict:
    """Fill ``model`` from ``path`` strictly; returns what was loaded (for metrics.json)."""
    state = read_state_dict(path)
    targets = model_tensors(model)
    m = fitting_match(model, state, path, layout)
    loaded = {model_key: state[file_key] for model_key, file_key in m.filled.items()}
    permuted = None
    order = _head_order(model)
    if order is not None and order[2] in loaded:
        dim, head_order, first = order
        file_order = file_vector_order(state)
        if file_order != head_order and loaded[first].shape[-1] == dim * (dim + 1) // 2:
            loaded[first] = loaded[first][:, vector_permutation(dim, file_order, head_order)]
            permuted = f"{first}: {file_order} -> {head_order} order"
    canonical = {id(t): k for k, t in targets.items()}  # every alias takes its canonical key's tensor
    full = {k: loaded.get(canonical[id(t)], t.detach()) for k, t in model.state_dict(keep_vars=True).items()}
    model.load_state_dict(full, strict=True)
    return {"path": str(Path(path).resolve()), "layout": m.layout, "tensors": len(m.filled), "permuted": permuted,
            "source": "lgm-gcp" if m.layout == "lgm-gcp" else "released"}
