"""The paper metafiles (conf/metafile/): each published number, released file and generated preset of a
paper written once, composed by Hydra, placed in its table by the presets' own config-group choices and
written into docs/ by scripts/generate_docs.py."""

import importlib.util
from pathlib import Path

import pytest
import yaml

from lgm_gcp.analysis.metafile import row_published, table_metrics
from lgm_gcp.analysis.table import Run, build_cells, load_table
from lgm_gcp.config import metafile
from lgm_gcp.config.compose import compose_with_choices
from lgm_gcp.config.metafile import generated_presets, load_metafile, metafile_names, preset_choices, preset_node
from lgm_gcp.errors import ConfigError

from conftest import CONF, conf_options

ROOT = Path(__file__).resolve().parents[1]
ROWS = [(name, row) for name in metafile_names() for row in load_metafile(name)["rows"]]
PRESET_ROWS = [(name, row) for name, row in ROWS if "preset" in row]  # the rest are `place` rows
TABLES = [p.stem for p in (CONF / "table").glob("*.yaml")
          if {"metafile", "metafiles"} & set(yaml.safe_load(p.read_text()))]


def table_metafiles(table) -> list:
    return ([table.metafile] if table.metafile else []) + list(table.metafiles)


def test_every_paper_preset_is_a_metafile_row_and_nothing_is_defined_twice():
    """The GCP study's 40, large-margin's 14 (ImageNet and CIFAR), 3G-Net's 4, L-GM's 2, iSQRT-COV's VGG-D
    and Random Erasing's are metafile rows; the one YAML preset left is this project's digits demo."""
    generated = generated_presets()
    assert len([p for p in generated if p.startswith("gcp_")]) == 40
    assert len([p for p in generated if p.startswith("lm_")]) == 14
    assert len([p for p in generated if p.startswith("g3_")]) == 4
    assert {"lgm_cifar100_simple_softmax", "lgm_cifar100_simple_lgm", "isqrt_vgg16_bn_imagenet",
            "fmnist_resnet20"} <= set(generated)
    assert conf_options("experiment") == ["digits_lgm_2d"]
    assert not set(generated) & set(conf_options("experiment"))


def test_a_parts_choices_come_after_the_shared_ones_and_before_the_rows():
    """One file, two recipes: the shared block picks head gap, part `cifar` picks the dataset and the
    backbone and part `imagenet` another dataset; the row's own backbone wins over its part's."""
    meta = {"preset": {"choices": {"head": "gap", "loss": "softmax"}, "reference": {"source": "{dataset}"}},
            "parts": {"cifar": {"choices": {"dataset": "cifar10", "backbone": "layer13"}},
                      "imagenet": {"choices": {"dataset": "imagenet", "backbone": "resnet50"}}}}
    cifar = {"preset": "a", "choices": {}, "parts": ["cifar"], "parameters": 1}
    imagenet = {"preset": "b", "choices": {"backbone": "resnet101"}, "parts": ["imagenet"], "parameters": 1}
    assert preset_node("toy", meta, cifar)["defaults"] == [
        {"override /dataset": "cifar10"}, {"override /backbone": "layer13"}, {"override /head": "gap"},
        {"override /loss": "softmax"}]
    node = preset_node("toy", meta, imagenet)
    assert node["defaults"][:2] == [{"override /dataset": "imagenet"}, {"override /backbone": "resnet101"}]
    assert node["reference"]["source"] == "imagenet"  # the source's {dataset} is the part's choice


@pytest.mark.parametrize("name,row", PRESET_ROWS, ids=[f"{n}:{r['preset']}" for n, r in PRESET_ROWS])
def test_each_row_names_a_preset_whose_choices_are_the_ones_hydra_composes(name, row):
    """Tables place a row's number by ``preset_choices``; they must be the choices Hydra composes."""
    _, choices = compose_with_choices([f"experiment={row['preset']}"])
    parsed = preset_choices(row["preset"])
    assert {k: choices[k] for k in parsed} == parsed and {"dataset", "backbone", "head", "loss"} <= set(parsed)


@pytest.mark.slow  # a sweep, table or kill/resume test (the brief's slow tier)
@pytest.mark.parametrize("table_name", TABLES)
def test_a_run_of_each_rows_preset_lands_in_the_cell_holding_the_rows_number(table_name, tmp_path):
    """Fabricate a finished run of every preset the table's metafile publishes a number for: each must
    land in the cell that shows that number (the large-margin table once selected head=gap, so its
    VGG-16 runs, head=flatten, never reached their cell)."""
    table = load_table(table_name)
    placed = 0
    for meta, row in [(m, r) for name in table_metafiles(table) for m in [load_metafile(name)] for r in m["rows"]]:
        number = row_published(meta, row, table_metrics(table))  # published, or the results entry of these metrics
        # a `place` row has no preset: a run with the choices it names stands in for one
        choices = row["place"] if "place" in row else compose_with_choices([f"experiment={row['preset']}"])[1]
        label = row.get("preset", row.get("name"))
        cells = build_cells([Run(tmp_path, {}, choices, {"status": "finished", "best": {}, "final": {}})], table)
        [cell] = [c for c in cells if c.runs] or [None]
        published = [c for c in cells if c.published == number and number is not None]
        if cell is not None and cell.published is not None:
            assert cell.published == number, f"{label} lands beside another row's number"
            placed += 1
        else:
            assert not published, f"{label}'s number is shown in a cell its runs never reach"
    assert placed == sum(len(v) for v in table.published.values())


def test_every_table_with_a_metafile_shows_every_number_it_publishes_for_the_tables_runs():
    expected = {"gcp_imagenet": 40, "gcp_robustness": 12, "g3net": 4, "large_margin_imagenet": 10,
                "large_margin_cifar": 4, "fashion_mnist": 1, "lgm_cifar100": 0,
                "fine_grained": 9, "second_order": 17}
    assert {t: sum(len(v) for v in load_table(t).published.values()) for t in TABLES} == expected


def test_preset_node_merges_the_shared_part_then_each_named_part_in_order():
    """Hand-made metafile: the shared preset sets lr 0.1 and wd 1e-4; part `long` sets 300 epochs, lr 0.2
    and dropout 0.5; part `short` (after it) sets 90 epochs. Nested keys merge (wd survives `long`'s
    optimizer entry), later parts win (90, not 300), the row's choices override the shared ones (head gcp,
    not gap) and come in the config groups' order, and {model}, {head} and the part's {note} fill the
    source."""
    meta = {"preset": {"choices": {"dataset": "imagenet", "head": "gap"}, "vars": {"note": ""},
                       "config": {"optimizer": {"lr": 0.1, "weight_decay": 1e-4}},
                       "reference": {"source": "{model} with {head}{note}", "dropout": 0.0}},
            "parts": {"long": {"config": {"optimizer": {"lr": 0.2}, "trainer": {"max_epochs": 300}},
                               "reference": {"dropout": 0.5}},
                      "short": {"config": {"trainer": {"max_epochs": 90}}, "vars": {"note": ", short"}}}}
    row = {"preset": "toy", "choices": {"head": "gcp", "backbone": "resnet50"}, "parts": ["long", "short"],
           "model": "resnet50_mpncov", "parameters": 123}
    node = preset_node("toy_paper", meta, row)
    assert node == {
        "defaults": [{"override /dataset": "imagenet"}, {"override /backbone": "resnet50"},
                     {"override /head": "gcp"}],
        "optimizer": {"lr": 0.2, "weight_decay": 1e-4},
        "trainer": {"max_epochs": 90},
        "reference": {"source": "resnet50_mpncov with gcp, short", "dropout": 0.5, "parameters": 123}}


@pytest.mark.parametrize("row,message", [
    ({"choices": {"backbone": "resnet50"}, "parts": ["nope"]},
     "metafile toy_paper, row toy: unknown part 'nope'; valid: long"),
    ({"choices": {"backbone": "resnet50", "colour": "red"}},
     "metafile toy_paper, row toy: colour is not a config group; valid: dataset, "),
    ({"choices": {"backbone": "resnet50"}, "part": ["long"]},
     "metafile toy_paper, row toy: unknown key part; valid: preset, choices, parts, "),
    ({"choices": {"backbone": "resnet50"}, "parts": ["long"], "reference_source": "{missing}"},
     "metafile toy_paper, row toy: reference.source names {missing}, which no vars entry sets"),
])
def test_a_bad_metafile_row_is_one_line_naming_the_file_the_row_and_what_is_valid(row, message):
    meta = {"preset": {"reference": {"source": row.pop("reference_source", "{model}")}},
            "parts": {"long": {"config": {"trainer": {"max_epochs": 300}}}}}
    with pytest.raises(ConfigError) as info:
        preset_node("toy_paper", meta, {"preset": "toy", "model": "m", "parameters": 1, **row})
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_a_part_with_a_key_beside_config_is_refused_not_ignored():
    meta = {"preset": {"reference": {"source": "s"}}, "parts": {"long": {"trainer": {"max_epochs": 300}}}}
    with pytest.raises(ConfigError, match=r"^metafile toy_paper, part long: unknown key trainer; valid: "
                                          r"choices, vars, config, reference$"):
        preset_node("toy_paper", meta, {"preset": "toy", "choices": {}, "parts": ["long"], "parameters": 1})


def test_a_preset_defined_in_a_metafile_and_a_yaml_file_is_refused_naming_both(tmp_path, monkeypatch):
    (tmp_path / "metafile").mkdir()
    (tmp_path / "experiment").mkdir()
    (tmp_path / "metafile" / "toy.yaml").write_text(yaml.safe_dump({"preset": {}, "rows": [
        {"preset": "twice", "choices": {"backbone": "resnet50"}, "parameters": 1}]}))
    (tmp_path / "experiment" / "twice.yaml").write_text("# @package _global_\n")
    monkeypatch.setattr(metafile, "_conf", lambda *parts: tmp_path.joinpath(*parts))
    metafile._read.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"preset twice is defined twice: in conf/metafile/toy.yaml and "
                                              r"conf/experiment/twice.yaml; keep one"):
            metafile.register_presets()
    finally:
        metafile._read.cache_clear()


def test_generated_presets_compose_beside_a_config_dir_and_are_named_among_the_valid_options(tmp_path):
    """--config-dir replaces hydra.searchpath, which must keep the metafile:// source; an unknown
    preset's message lists the generated ones with the YAMLs."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\ntrainer: {max_epochs: 7}\n")
    cfg, choices = compose_with_choices(["experiment=gcp_resnet18_gcp_norm"], search_path=str(tmp_path))
    assert choices["head"] == "gcp" and cfg.trainer.batch_size == 256
    assert compose_with_choices(["experiment=mine"], search_path=str(tmp_path))[0].trainer.max_epochs == 7
    valid = (r"valid: .*digits_lgm_2d, .*fg_vgg16_bn_cub, fmnist_resnet20, .*gcp_mobilenet_v2_gap_adju, "
             r".*lm_vgg16_mod_imagenet_softmax")
    with pytest.raises(ConfigError, match=r"unknown experiment option 'gcp_resnet18'; " + valid):
        compose_with_choices(["experiment=gcp_resnet18"])
    with pytest.raises(ConfigError, match=r"unknown experiment option 'gcp_resnet18'; " + valid):  # a sweep's values
        compose_with_choices(["experiment=gcp_resnet18_gap_norm,gcp_resnet18"])


def test_docs_blocks_are_what_the_metafiles_generate():
    """Every generated block of README.md and docs/ (released weights, included results tables, the config
    groups) is what scripts/generate_docs.py writes from its source now."""
    spec = importlib.util.spec_from_file_location("generate_docs", ROOT / "scripts" / "generate_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for path in module.pages():
        assert module.regenerate(path.read_text()) == path.read_text(), f"{path}: run scripts/generate_docs.py"
    readme, claims = (ROOT / "README.md").read_text(), (ROOT / "docs" / "claims.md").read_text()
    assert readme.count("<!-- end groups -->") == 1 and claims.count("<!-- end include -->") == 9
    text = (ROOT / "docs" / "weights.md").read_text()
    released = [r for _, r in ROWS if r.get("released")]
    assert len(released) == 40 + 4 + 3  # GCP study, 3G-Net, fast-MPN-COV: an empty block cannot pass
    assert all(f"lgm-gcp-eval {r['released']} experiment={r['preset']}`" in text for r in released)
    places = next(r for _, r in PRESET_ROWS if r["preset"] == "g3_resnet50_places365")
    top1, top5 = places["published"]  # published error (%) and the row's protocol, in the docs' format
    assert f"| `lgm-gcp-eval ResNet50-3G-Places365.pth.tar experiment=g3_resnet50_places365` | {top1:.2f} / " \
           f"{top5:.2f} (10-crop) |" in text


def test_an_unknown_metafile_is_one_line_and_no_table_keeps_a_second_copy():
    with pytest.raises(ConfigError, match="unknown metafile 'nope'; valid: bilinear, dropcov, fine_grained, g3net, "):
        load_metafile("nope")
    for name in TABLES:
        assert "published:" not in (CONF / "table" / f"{name}.yaml").read_text()


def published_numbers() -> dict:
    """{number as written: where} for every published number of the metafiles (their rows' ``published``
    and ``results``) and of the tables' ``published`` and ``references``: those written with two decimals
    and at least 1, which do not recur by chance in prose or code the way 0.2 or 87.0 do."""
    import re

    import yaml

    found = {}

    def collect(value, where):
        if isinstance(value, (list, tuple)):
            for item in value:
                collect(item, where)
        elif isinstance(value, dict):
            for item in value.values():
                collect(item, where)
        elif value is not None and not isinstance(value, bool):
            for text in re.findall(r"\d+\.\d\d\b", str(value) if isinstance(value, str) else f"{value:.2f}"):
                if float(text) >= 1:  # a spread (± 0.27) is left out: such small values recur by chance
                    found.setdefault(text, where)

    for path in sorted((ROOT / "conf" / "metafile").glob("*.yaml")):
        for row in yaml.safe_load(path.read_text())["rows"]:
            collect([row.get("published")] + [r["published"] for r in row.get("results", [])], path.name)
    for path in sorted((ROOT / "conf" / "table").glob("*.yaml")):
        table = yaml.safe_load(path.read_text())
        collect([table.get("published"), table.get("references")], path.name)
    return found


def test_each_published_number_is_written_in_one_file():
    """A published number lives in its metafile (or a table's references); tests and docs read it from
    there. Generated pages (docs/weights.md, checked above) and measured results (docs/results/, and the
    include blocks scripts/generate_docs.py copies from there) aside, no tracked file restates one. A measured
    accuracy can equal a published one by chance (vgg16_bn on the demo, at 32 px)."""
    import re
    import subprocess

    numbers = published_numbers()
    assert len(numbers) > 150  # the GCP study alone publishes 80 top-1 / top-5 pairs
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    pattern = re.compile(r"(?<![\d.])(\d+\.\d\d)(?!\d)")
    measured = re.compile(r"<!-- include: results/.*?<!-- end include -->", re.S)
    restated = {}
    for name in tracked:
        if name.startswith(("conf/metafile/", "docs/results/")) or name == "docs/weights.md" \
                or not name.endswith((".py", ".md", ".yaml", ".sh", ".toml")):
            continue
        path = ROOT / name
        if name.startswith("conf/table/"):  # a table's own references are its own; its published are checked
            continue
        for text in pattern.findall(measured.sub("", path.read_text(errors="ignore"))):
            if text in numbers:
                restated.setdefault(text, []).append(name)
    assert not restated, f"published numbers restated outside {set(numbers.values())}: {restated}"


def test_a_rows_network_facts_come_from_the_files_networks_table_once_per_backbone_and_head():
    """The GCP study's 14 (backbone, head) pairs carry 40 rows: each count is written once, in networks."""
    meta = {"preset": {"reference": {"source": "{model}"}},
            "networks": {"resnet50": {"gcp": {"model": "resnet50_mpncov", "parameters": 56929832}}}}
    node = preset_node("toy", meta, {"preset": "a", "choices": {"backbone": "resnet50", "head": "gcp"}})
    assert (node["reference"]["source"], node["reference"]["parameters"]) == ("resnet50_mpncov", 56929832)
    with pytest.raises(ConfigError, match=r"^metafile toy, row b: no parameter count; give the row's parameters "
                                          r"or networks.resnet50.gap$"):
        preset_node("toy", meta, {"preset": "b", "choices": {"backbone": "resnet50", "head": "gap"}})
    counts = load_metafile("gcp_study")["networks"]
    assert sum(len(heads) for heads in counts.values()) == 14


def test_a_place_row_is_a_number_without_a_preset_placed_by_its_choices():
    """SoT's published models change the token stem too: its row composes nothing (no experiment preset),
    is checked for its keys, and lands where a DeiT run with head=sot would."""
    assert not [p for p in generated_presets() if p.startswith(("sot", "dropcov_deit"))]
    table = load_table("second_order")
    assert table.published["SoT DeiT-S (token stem)"]["ImageNet (1-crop)"] == [82.7]
    from lgm_gcp.config.metafile import PLACED_ROW_KEYS, _check_keys

    with pytest.raises(ConfigError, match="row a: unknown key parameters"):  # a count needs a preset to check it
        _check_keys("metafile bad, row a", {"name": "a", "place": {}, "parameters": 1}, PLACED_ROW_KEYS)


def test_the_table_alone_prints_its_published_numbers(capsys):
    from lgm_gcp.analysis.table import cli

    cli(["table=second_order"])
    out = capsys.readouterr().out
    dropcov = {r.get("preset"): r["published"][0] for r in load_metafile("dropcov")["rows"]}
    isice = {r["preset"]: r["published"][0] for r in load_metafile("isice")["rows"]}
    assert f"| DropCov ResNet-50 | missing · paper {dropcov['dropcov_resnet50_imagenet']:.2f} |" in out
    assert f"| iSICE VGG-16 | missing | missing · paper {isice['isice_vgg16_bn_cub']:.2f}" in out
