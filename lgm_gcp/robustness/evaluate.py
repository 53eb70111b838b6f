"""lgm-gcp-robustness: a run's robustness to common corruptions (ImageNet-C protocol) and to
perturbation sequences (ImageNet-P protocol), generated on the fly from its own test split.

    lgm-gcp-robustness RUN [RUN ...] [--baseline auto|alexnet|none|BASELINE_RUN] [--max-images N]
                       [--corruptions ...] [--severities 1 2 3 4 5] [--perturbations ...]
                       [--protocol auto|imagenet|cifar] [--seed 0] [--frost-dir DIR]

Each test image (the run's own evaluation preprocessing, un-normalised to pixels) is corrupted at
every severity and put through every perturbation sequence; image i's random draws come from its
own seed, so results do not depend on the batch size. Reported per run: the error of every
corruption and severity, CE_c, mCE and relative mCE, and FP_p / T5D_p, mFP and mT5D (definitions in
``metrics.py``). Normalisers (``--baseline``):
  alexnet       AlexNet's published ImageNet-C errors (ImageNet-C only: protocol imagenet, all 15
                corruptions at 5 severities); ImageNet-P's AlexNet numbers are not published in code,
                so mFP/mT5D need a baseline run
  BASELINE_RUN  a run folder evaluated with the same settings (evaluated first if its
                robustness.json does not match), for C and P alike
  none          only the raw numbers (mean error, as CIFAR-10-C reports it; raw FP and T5D)
  auto          alexnet for ImageNet-protocol runs over all 15 corruptions and 5 severities, else none
Writes robustness.json and robustness.md into each run folder (an earlier robustness.json is kept as
robustness-N.json) and prints one table over the runs; ``lgm-gcp-table table=gcp_robustness``
reads robustness.json beside the GCP study's published numbers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from lgm_gcp.analysis.runs import add_device_argument, load_run, read_json, read_yaml, resolve_device, run_folder
from lgm_gcp.errors import ConfigError, RunFolderError, UserError, fail, one_line_parser, output_path, positive_int
from lgm_gcp.markdown import markdown_table
from lgm_gcp.robustness import corruptions as C
from lgm_gcp.robustness import metrics as M
from lgm_gcp.robustness import perturbations as P

RESULT = "robustness.json"


def image_seed(seed: int, kind: int, severity: int, index: int) -> int:
    """The seed of one image's draws for one corruption (kind) at one severity (or one sequence)."""
    return ((seed * 64 + kind) * 8 + severity) * 100_000_000 + index


def pixels_of(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Normalised evaluation images back to pixels in [0, 1] on the 8-bit grid they were read from."""
    return (images * std + mean).mul(255).round().clamp(0, 255).div(255)


@torch.no_grad()
def evaluate(run_dir: str | Path, settings: dict, device: str = "cpu") -> dict:
    """Errors under every corruption and severity, and FP/T5D under every perturbation, of one run.
    ``settings``: corruptions, severities, perturbations, protocol, seed, max_images, frost_dir,
    batch_size."""
    run_dir = run_folder(run_dir)
    cfg, data, model = load_run(run_dir, device=device)
    mean = torch.tensor(cfg["dataset"]["mean"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(cfg["dataset"]["std"], dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def logits(pixels: torch.Tensor) -> torch.Tensor:
        return model((pixels - mean) / std).float().cpu()

    s = settings
    n_images = min(s["max_images"], _test_size(data))
    wrong = {c: [0] * len(s["severities"]) for c in s["corruptions"]}
    fp_sum = dict.fromkeys(s["perturbations"], 0.0)
    t5d_sum = dict.fromkeys(s["perturbations"], 0.0)
    clean_wrong, seen, protocol = 0, 0, None
    work = len(s["corruptions"]) * len(s["severities"]) + len(s["perturbations"])
    bar = tqdm(total=n_images * max(work, 1), desc=run_dir.name, unit="img", disable=not sys.stderr.isatty())
    for images, labels in data.test_batches(s["batch_size"]):
        images, labels = images[: n_images - seen], labels[: n_images - seen]
        pixels = pixels_of(images.to(device), mean, std)  # corrupted on the device, too
        protocol = protocol or C.protocol_for(*pixels.shape[-2:], s["protocol"])
        indices = range(seen, seen + len(labels))
        clean_wrong += int((logits(pixels).argmax(1) != labels).sum())
        for name in s["corruptions"]:  # seeded by the canonical index: a subset draws what the full run draws
            k = C.CORRUPTIONS.index(name)
            for j, severity in enumerate(s["severities"]):
                gens = [torch.Generator().manual_seed(image_seed(s["seed"], k, severity, i)) for i in indices]
                corrupted = C.corrupt(pixels, name, severity, gens, protocol, s["frost_dir"])
                wrong[name][j] += int((logits(corrupted).argmax(1) != labels).sum())
                bar.update(len(labels))
        for name in s["perturbations"]:
            k = 32 + P.PERTURBATIONS.index(name)
            gens = [torch.Generator().manual_seed(image_seed(s["seed"], k, 0, i)) for i in indices]
            frame_logits = torch.stack([logits(f) for f in P.frames(pixels, name, gens, protocol)])
            to_first = P.compares_to_first(name)
            fp_sum[name] += M.flip_probability(frame_logits.argmax(-1), to_first) * len(labels)
            t5d_sum[name] += M.top5_distance(M.ranks_of(frame_logits), to_first) * len(labels)
            bar.update(len(labels))
        seen += len(labels)
        if seen >= n_images:
            break
    bar.close()
    if not seen:
        raise RunFolderError(f"{run_dir}: the test split holds no images to evaluate")
    return {
        "run_dir": str(run_dir),
        "settings": {**{k: v for k, v in s.items() if k != "batch_size"}, "protocol": protocol, "images": seen,
                     "dataset": cfg["dataset"].get("name")},
        "clean_error": clean_wrong / seen,
        "errors": {c: [w / seen for w in ws] for c, ws in wrong.items()},
        "FP": {p: v / seen for p, v in fp_sum.items()},
        "T5D": {p: v / seen for p, v in t5d_sum.items()},
    }


def summarise(raw: dict, baseline: dict | str | None) -> dict:
    """The run's numbers normalised by ``baseline``: "alexnet", another run's raw result, or None."""
    severities = raw["settings"]["severities"]
    if baseline == "alexnet":
        base_errors = {c: [M.ALEXNET_ERRORS[c][s - 1] for s in severities] for c in raw["errors"]}
        base_clean, base_p = M.ALEXNET_CLEAN_ERROR, None
    elif isinstance(baseline, dict):
        base_errors, base_clean, base_p = baseline["errors"], baseline["clean_error"], baseline
    else:
        base_errors = base_clean = base_p = None
    c = M.corruption_summary(raw["errors"], raw["clean_error"], base_errors if raw["errors"] else None, base_clean)
    p = M.perturbation_summary(raw["FP"], raw["T5D"], base_p) if raw["FP"] else {}
    summary = {k: c.get(k) for k in ("clean_error", "mean_error", "mCE", "relative_mCE")}
    summary |= {k: p.get(k) for k in ("mean_FP", "mean_T5D", "mFP", "mT5D")}
    summary["undefined"] = c.get("undefined", []) + p.get("undefined", [])
    return {**raw, "baseline": baseline if isinstance(baseline, (str, type(None))) else baseline["run_dir"],
            "corruption": c, "perturbation": p, "summary": summary}


def check_baseline(baseline: str, settings: dict, run_dirs: list) -> None:
    """Before any work: ``alexnet`` fits only the full ImageNet-C protocol on ImageNet-sized images;
    a baseline folder must be a run."""
    if baseline == "alexnet":
        if settings["protocol"] == "cifar" or sorted(settings["corruptions"]) != sorted(C.CORRUPTIONS) \
                or sorted(settings["severities"]) != [1, 2, 3, 4, 5]:
            raise ConfigError("--baseline alexnet normalises ImageNet-C: all 15 corruptions at severities 1-5 under "
                              "the imagenet protocol; give a baseline run folder or --baseline none")
        for run in run_dirs:
            size = read_yaml(Path(run) / "config.yaml", ("dataset",))["dataset"].get("image_size", 0)
            if C.protocol_for(size, size, settings["protocol"]) != "imagenet":
                raise ConfigError(f"--baseline alexnet normalises ImageNet-C at the imagenet protocol, but {run}'s "
                                  f"{size}-pixel images take the cifar protocol; give a baseline run folder, "
                                  "--protocol imagenet or --baseline none")
    elif baseline not in ("auto", "none"):
        run_folder(baseline)


def _resolve_baseline(baseline: str, raw: dict) -> str | None:
    if baseline == "auto":
        s = raw["settings"]
        full = sorted(s["corruptions"]) == sorted(C.CORRUPTIONS) and sorted(s["severities"]) == [1, 2, 3, 4, 5]
        return "alexnet" if s["protocol"] == "imagenet" and full else None
    return None if baseline == "none" else baseline


def baseline_result(folder: str, settings: dict, device: str) -> dict:
    """The baseline run's raw result under ``settings``: its robustness.json if it matches, else a
    fresh evaluation (written back)."""
    path = Path(folder) / RESULT
    if path.is_file():
        old = read_json(path)
        wanted = {k: v for k, v in settings.items() if k not in ("batch_size", "protocol")}
        if all(old.get("settings", {}).get(k) == v for k, v in wanted.items()) and \
                settings["protocol"] in ("auto", old.get("settings", {}).get("protocol")):
            return old
    raw = evaluate(folder, settings, device)
    write_result(Path(folder), summarise(raw, None))
    return raw


def write_result(run_dir: Path, result: dict) -> None:
    path = run_dir / RESULT
    if path.is_file():  # an earlier evaluation is kept
        n = 1
        while (run_dir / f"robustness-{n}.json").exists():
            n += 1
        path.rename(run_dir / f"robustness-{n}.json")
    path.write_text(json.dumps(result, indent=2))
    (run_dir / "robustness.md").write_text(detail_table(result))


def _fmt(v, digits=1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def detail_table(result: dict) -> str:
    """Per corruption: error (%) at each severity and CE; per perturbation: FP (%), T5D and ratios."""
    sev = result["settings"]["severities"]
    c, p = result["corruption"], result["perturbation"]
    lines = [f"### {Path(result['run_dir']).name}: robustness ({result['settings']['protocol']} protocol, "
             f"{result['settings']['images']} images, baseline {result['baseline'] or 'none'})", "",
             f"clean error {_fmt(c.get('clean_error', 100 * result['clean_error']))} %", ""]
    if result["errors"]:
        lines.append(markdown_table(
            ["corruption", *(f"s{s} err %" for s in sev), "CE", "relative CE"],
            [[name, *(f"{100 * e:.1f}" for e in errs), _fmt((c["CE"] or {}).get(name)),
              _fmt((c["relative_CE"] or {}).get(name))] for name, errs in result["errors"].items()]))
        lines += ["", f"mean error {_fmt(c['mean_error'])} %, mCE {_fmt(c['mCE'])}, "
                      f"relative mCE {_fmt(c['relative_mCE'])}", ""]
    if result["FP"]:
        lines.append(markdown_table(
            ["perturbation", "FP %", "T5D", "FR", "T5D ratio"],
            [[name, f"{100 * result['FP'][name]:.2f}", f"{result['T5D'][name]:.3f}", _fmt((p["FR"] or {}).get(name)),
              _fmt((p["T5D_ratio"] or {}).get(name))] for name in result["FP"]]))
        lines += ["", f"mean FP {_fmt(p['mean_FP'], 2)} %, mean T5D {_fmt(p['mean_T5D'], 3)}, mFP {_fmt(p['mFP'])}, "
                      f"mT5D {_fmt(p['mT5D'])}", ""]
    if result["summary"]["undefined"]:
        lines += ["left out of the means (the baseline's denominator is 0): "
                  + ", ".join(result["summary"]["undefined"]), ""]
    return "\n".join(lines)


def summary_table(results: list) -> str:
    header = ["run", "baseline", "images", "clean err %", "mean err %", "mCE", "relative mCE", "mean FP %",
              "mean T5D", "mFP", "mT5D"]
    rows = [[Path(r["run_dir"]).name, Path(r["baseline"]).name if r["baseline"] else "none", r["settings"]["images"],
             _fmt(s["clean_error"]), _fmt(s["mean_error"]), _fmt(s["mCE"]), _fmt(s["relative_mCE"]),
             _fmt(s["mean_FP"], 2), _fmt(s["mean_T5D"], 3), _fmt(s["mFP"]), _fmt(s["mT5D"])]
            for r in results for s in [r["summary"]]]
    return markdown_table(header, rows) + "\n"


def _test_size(data) -> int:
    return len(data.test_y) if hasattr(data, "test_y") else len(data.test_set)


def cli(argv=None) -> None:
    parser = one_line_parser("lgm-gcp-robustness", __doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN")
    parser.add_argument("--baseline", default="auto", help="auto | alexnet | none | a baseline run folder")
    parser.add_argument("--corruptions", nargs="*", choices=C.CORRUPTIONS, default=list(C.CORRUPTIONS),
                        help="ImageNet-C corruptions (the flag alone: none, ImageNet-C skipped)")
    parser.add_argument("--severities", nargs="+", type=int, choices=range(1, 6), default=[1, 2, 3, 4, 5])
    parser.add_argument("--perturbations", nargs="*", choices=P.PERTURBATIONS, default=list(P.PERTURBATIONS),
                        help="ImageNet-P perturbations (the flag alone: none, ImageNet-P skipped)")
    parser.add_argument("--protocol", choices=("auto", *C.PROTOCOLS), default="auto",
                        help="parameter set: imagenet (224 px), cifar (32 px), auto: by image size")
    parser.add_argument("--max-images", type=positive_int, default=10**9, help="the first N test images")
    parser.add_argument("--batch-size", type=positive_int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frost-dir", default=None, help="ImageNet-C's frost photographs (default: procedural)")
    add_device_argument(parser)
    parser.add_argument("--out", type=output_path, default=None, help="where to write the table over runs (.md)")
    args = parser.parse_args(argv)
    settings = {"corruptions": args.corruptions, "severities": sorted(set(args.severities)),
                "perturbations": args.perturbations, "protocol": args.protocol, "seed": args.seed,
                "max_images": args.max_images, "frost_dir": args.frost_dir, "batch_size": args.batch_size}
    try:
        args.device = resolve_device(args.device)
        if not args.corruptions and not args.perturbations:
            raise ConfigError("nothing to evaluate: give at least one corruption or perturbation")
        if args.frost_dir and not Path(args.frost_dir).is_dir():
            raise ConfigError(f"--frost-dir {args.frost_dir} is not a folder; give the folder of frost1.png … "
                              "frost6.jpg, or leave it out for the procedural frost")
        for run in args.run_dirs:
            run_folder(run)
        check_baseline(args.baseline, settings, args.run_dirs)
        results, base = [], None
        if args.baseline not in ("auto", "alexnet", "none"):  # evaluated (or read) once for all runs
            base = baseline_result(args.baseline, settings, args.device)
        for run in args.run_dirs:
            same = base is not None and Path(run).resolve() == Path(args.baseline).resolve()
            raw = {k: base[k] for k in ("run_dir", "settings", "clean_error", "errors", "FP", "T5D")} if same \
                else evaluate(run, settings, args.device)
            baseline = base if base is not None else _resolve_baseline(args.baseline, raw)
            result = summarise(raw, baseline)
            write_result(Path(run), result)
            results.append(result)
    except UserError as e:
        fail("lgm-gcp-robustness", e)
    text = summary_table(results)
    if args.out:
        Path(args.out).write_text(text)
    print(text, end="")
