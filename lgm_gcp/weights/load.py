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
    meta device: shapes only), or ``finetune`` fills its backbone; ``eval.only`` has weights to evaluate."""
    if not cfg.get("weights"):
        if cfg["eval"]["only"]:
            raise ConfigError("eval.only=true evaluates the weights of a file: give weights=FILE, or run "
                              "lgm-gcp-eval FILE")
        if cfg.get("finetune"):
            if not Path(cfg["finetune"]).is_file():
                raise CheckpointError(f"finetune={cfg['finetune']} does not exist; put the file there (LGM_GCP_WEIGHTS "
                                      "names the folder the presets read) or give finetune=FILE")
            finetune_match(model, read_state_dict(cfg["finetune"]), cfg["finetune"])
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


def _permuted(model: torch.nn.Module, state: dict, loaded: dict) -> str | None:
    """Reorder, in ``loaded``, the first layer reading a covariance vector when the file vectorised the
    matrix in another order; returns what was permuted, or None."""
    order = _head_order(model)
    if order is None or order[2] not in loaded:
        return None
    dim, head_order, first = order
    file_order = file_vector_order(state)
    if file_order == head_order or loaded[first].shape[-1] != dim * (dim + 1) // 2:
        return None
    loaded[first] = loaded[first][:, vector_permutation(dim, file_order, head_order)]
    return f"{first}: {file_order} -> {head_order} order"


def _fill(model: torch.nn.Module, targets: dict, loaded: dict) -> None:
    canonical = {id(t): k for k, t in targets.items()}  # every alias takes its canonical key's tensor
    full = {k: loaded.get(canonical[id(t)], t.detach()) for k, t in model.state_dict(keep_vars=True).items()}
    model.load_state_dict(full, strict=True)


def load_weights(model: torch.nn.Module, path: str | Path, layout: str | None = None) -> dict:
    """Fill ``model`` from ``path`` strictly; returns what was loaded (for metrics.json)."""
    state = read_state_dict(path)
    targets = model_tensors(model)
    m = fitting_match(model, state, path, layout)
    loaded = {model_key: state[file_key] for model_key, file_key in m.filled.items()}
    permuted = _permuted(model, state, loaded)
    _fill(model, targets, loaded)
    return {"path": str(Path(path).resolve()), "layout": m.layout, "tensors": len(m.filled), "permuted": permuted,
            "source": "lgm-gcp" if m.layout == "lgm-gcp" else "released"}


def finetune_match(model: torch.nn.Module, state: dict, path: str | Path) -> Match:
    """The layout that fills the most of ``model``; one line unless it fills every backbone tensor."""
    m = match(state, model_tensors(model))
    trunk_missing = [k for k in m.missing if k.startswith("backbone.")]
    trunk_mismatched = [x for x in m.mismatched if x[1].startswith("backbone.")]
    if trunk_missing or trunk_mismatched:
        problems = describe_problems(Match(m.layout, m.renamed, missing=trunk_missing, mismatched=trunk_mismatched))
        raise CheckpointError(f"finetune={path} does not fill this backbone (closest layout: {m.layout}): {problems}; "
                              "check backbone= matches the file's network (see docs/weights.md)")
    return m


def _first(names: list, shown: int = 4) -> str:
    return ", ".join(names[:shown]) + (f" (+{len(names) - shown} more)" if len(names) > shown else "")


def load_for_finetuning(model: torch.nn.Module, path: str | Path) -> dict:
    """``finetune=FILE``: every backbone tensor from the file (or one line), the head's tensors where name and
    shape agree, and the classifier (``criterion.*``) new whatever the file holds; returns what was loaded
    and left out (metrics.json), with a one-line ``summary`` for the log."""
    state = read_state_dict(path)
    targets = model_tensors(model)
    m = finetune_match(model, state, path)
    loaded = {k: state[f] for k, f in m.filled.items() if not k.startswith("criterion.")}
    permuted = _permuted(model, state, loaded)
    _fill(model, targets, loaded)
    canonical = {id(t): k for k, t in targets.items()}
    alias_of = {k: canonical[id(t)] for k, t in model.state_dict(keep_vars=True).items()}
    used = [f for f in state if alias_of.get(m.renamed.get(f)) in loaded]  # a module under two names counts once
    left_out = [f"{k} {'x'.join(map(str, state[k].shape))}" for k in state if k not in set(used)]
    new = [k for k in targets if k not in loaded and not k.endswith("num_batches_tracked")]
    parts = {part: sum(k.startswith(part + ".") for k in loaded) for part in ("backbone", "head")}
    summary = (f"finetune={path} (layout {m.layout}): loaded {len(loaded)} tensors (backbone {parts['backbone']}, "
               f"head {parts['head']}); new: {_first(new)}; left out of the file: {_first(left_out) or 'nothing'}")
    return {"path": str(Path(path).resolve()), "layout": m.layout, "tensors": len(loaded), "permuted": permuted,
            "source": "finetune", "new": new, "left_out": left_out, "summary": summary}
