"""lgm-gcp-table on a real 2x2x2 digits sweep (loss x head x seed), and on a sweep with a missing run."""

import csv
import json
import shutil
import statistics

import pytest

from lgm_gcp.analysis.table import cli, load_table
from lgm_gcp.config.metafile import load_metafile

from conftest import run_cli

TABLES = ["gcp_imagenet", "g3net", "large_margin_cifar", "large_margin_imagenet", "lgm_cifar100", "digits_demo",
          "fashion_mnist"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    result = run_cli("-m", "loss=softmax,lgm", "head=gap,gcp", "seed=0,1", "backbone.widths=[4,8]",
                     "trainer.max_epochs=1", "trainer.progress=false", "hydra.sweep.dir=sweep", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "sweep"


def job(head, loss, seed):
    return f"backbone.widths=[4,8],head={head},loss={loss},seed={seed},trainer.max_epochs=1"


def _final(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())["final"]["test_top1"]


@pytest.mark.slow
def test_table_cells_equal_the_runs_metrics(sweep, tmp_path, capsys):
    cli([str(sweep), "table=digits_demo", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    rows = {(r["row"], r["column"]): r for r in csv.DictReader(open(tmp_path / "digits_demo.csv"))}
    assert len(rows) == 4
    for loss, row in (("softmax", "softmax"), ("lgm", "L-GM")):
        for head, col in (("gap", "GAP"), ("gcp", "GCP")):
            values = [_final(sweep / job(head, loss, s)) for s in (0, 1)]
            cell = rows[(row, col)]
            assert cell["status"] == "ok" and int(cell["n"]) == 2
            assert float(cell["test_top1_mean"]) == pytest.approx(statistics.fmean(values))
            assert float(cell["test_top1_std"]) == pytest.approx(statistics.stdev(values))
            assert f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f} (n=2)" in printed
    assert (tmp_path / "digits_demo.md").read_text() == printed
    assert (tmp_path / "digits_demo.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_missing_and_failed_runs_are_marked(sweep, tmp_path, capsys):
    partial = tmp_path / "partial"
    shutil.copytree(sweep, partial)
    for seed in (0, 1):
        shutil.rmtree(partial / job("gcp", "lgm", seed))
    (partial / job("gap", "lgm", 0) / "metrics.json").unlink()  # started, never wrote metrics
    metrics = partial / job("gap", "lgm", 1) / "metrics.json"
    data = json.loads(metrics.read_text())
    metrics.write_text(json.dumps({**data, "status": "failed"}))
    cli([str(partial), "table=digits_demo", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    lgm_row = next(line for line in printed.splitlines() if line.startswith("| L-GM"))
    assert lgm_row.split("|")[2].strip() == "failed" and lgm_row.split("|")[3].strip() == "missing"
    softmax_row = next(line for line in printed.splitlines() if line.startswith("| softmax"))
    assert "(n=2)" in softmax_row


@pytest.mark.slow
def test_published_numbers_and_deltas_are_printed(sweep, tmp_path, capsys):
    table = load_table("large_margin_cifar")
    rows = {r["preset"]: r["published"] for r in load_metafile("large_margin")["rows"]}
    softmax, large_margin = rows["lm_layer13_cifar10_softmax"], rows["lm_layer13_cifar10_large_margin"]
    assert table.published["CIFAR-10"]["softmax"] == softmax and "±" in softmax  # mean ± std, as published
    cli([str(sweep), "table=large_margin_cifar", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert f"| CIFAR-10 | missing · paper {softmax} | missing · paper {large_margin} |" in printed


@pytest.mark.parametrize("name", TABLES)
def test_every_table_loads_and_names_existing_options(name):
    from importlib import resources
    from pathlib import Path

    conf = Path(str(resources.files("lgm_gcp.conf")))
    table = load_table(name)
    for axis in (table.rows, table.columns):
        for combo in axis.labels:
            for key, value in zip(axis.keys, combo.split(",")):
                if (conf / key).is_dir():
                    assert (conf / key / f"{value}.yaml").is_file(), (key, value)
    for row, cols in table.published.items():
        assert row in table.rows.labels.values() and set(cols) <= set(table.columns.labels.values())


def test_unknown_table_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli([str(tmp_path), "table=nope"])
    assert "unknown table 'nope'; valid: " in capsys.readouterr().err


# What each reference reported: the GCP study and 3G-Net validate model_best.pth.tar, the
# large-margin scripts print the best test error over epochs, Caffe's L-GM solver tests its last
# snapshot; the demo reports its last epoch.
REFERENCE_TAKES = {"gcp_imagenet": "best", "g3net": "best", "large_margin_imagenet": "best",
                   "large_margin_cifar": "best", "lgm_cifar100": "final", "digits_demo": "final",
                   # lgm-gcp-robustness evaluates checkpoints/best.pt
                   "gcp_robustness": "best", "digits_robustness": "best", "digits_gcp_claims": "final",
                   # issue 26: the final epoch (its one published cell, Random Erasing's, is a best epoch)
                   "fashion_mnist": "final"}


@pytest.mark.parametrize("name", TABLES)
def test_each_table_takes_the_epoch_its_reference_reported_and_says_so(name, tmp_path):
    from lgm_gcp.analysis.table import make_table

    table = load_table(name)
    assert table.take == REFERENCE_TAKES[name]
    text = make_table([tmp_path], name, tmp_path)
    assert f"from the {table.take} epoch of each run" in text
    assert {row["epoch"] for row in csv.DictReader(open(tmp_path / f"{name}.csv"))} == {table.take}


def test_published_models_no_row_trains_are_listed_with_their_sources(tmp_path):
    from lgm_gcp.analysis.table import make_table

    text = make_table([tmp_path], "fashion_mnist", tmp_path)
    block = text.split("Published, not trained here:")[1]
    assert "| SVC, RBF, C = 10 (best of 129 scikit-learn classifiers, mean of 5 runs) | 89.7 (Xiao et al. 2017" in block
    assert block.count("\n| ") == len(load_table("fashion_mnist").references) + 1  # + the header row
    published = load_metafile("random_erasing")["rows"][0]["published"]  # written once, in the metafile
    assert f"missing · paper {published}" in text  # ResNet-20's cell before any run
    assert "Published, not trained here" not in make_table([tmp_path], "digits_demo", tmp_path)


def test_best_take_scores_the_best_epoch_not_the_last(tmp_path):
    """A run whose test top-1 went 50 -> 70 -> 60: the best take scores 70, the final take 60."""
    from lgm_gcp.analysis.table import Run, _score

    epochs = [{"epoch": i, "test_top1": v} for i, v in enumerate((50.0, 70.0, 60.0))]
    metrics = {"status": "finished", "epochs": epochs, "best": epochs[1], "final": epochs[2]}
    run_ = Run(tmp_path, {}, {}, metrics)
    best, final = load_table("g3net"), load_table("lgm_cifar100")
    assert _score(run_, final)[0] == 60.0
    assert _score(run_, best)[0] == 100.0 - 70.0  # g3net reports errors


def test_robustness_table_reads_each_runs_robustness_summary(tmp_path, capsys):
    """Two fabricated ImageNet runs (GAP, GCP on ResNet-50, LR_norm), the GCP one with a robustness.json;
    one without robustness.json is 'not evaluated'; the GCP cell shows its four numbers beside the paper's."""
    import json

    import yaml

    def fake(name, head, summary):
        d = tmp_path / name
        d.mkdir()
        choices = {"dataset": "imagenet", "backbone": "resnet50", "head": head, "loss": "softmax", "lr_policy": "norm"}
        (d / "config.yaml").write_text(yaml.safe_dump({"seed": 0}))
        (d / "choices.yaml").write_text(yaml.safe_dump(choices))
        (d / "metrics.json").write_text(json.dumps({"status": "finished", "best": {"test_top1": 70.0}}))
        if summary:
            (d / "robustness.json").write_text(json.dumps({"summary": summary}))

    fake("gcp", "gcp", {"mCE": 71.5, "relative_mCE": 98.25, "mFP": 48.0, "mT5D": 75.0})
    fake("gap", "gap", None)
    cli([str(tmp_path), "table=gcp_robustness"])
    out = capsys.readouterr().out
    rows = {r["preset"]: r for r in load_metafile("gcp_study")["rows"]}
    (gap,) = [r["published"] for r in rows["gcp_resnet50_gap_norm"]["results"]]
    (gcp,) = [r["published"] for r in rows["gcp_resnet50_gcp_norm"]["results"]]
    ours = [71.5, 98.25, 48.0, 75.0]
    assert f"| ResNet-50 | not evaluated · paper {' / '.join(f'{v:.2f}' for v in gap)} | " \
           f"71.50 / 98.25 / 48.00 / 75.00 (n=1) · paper {' / '.join(f'{v:.2f}' for v in gcp)} · " \
           f"Δ {' / '.join(f'{a - b:+.2f}' for a, b in zip(ours, gcp))} |" in out
    rows = {(r["row"], r["column"]): r for r in csv.DictReader(open(tmp_path / "gcp_robustness.csv"))}
    assert float(rows[("ResNet-50", "GCP")]["mT5D_mean"]) == 75.0
