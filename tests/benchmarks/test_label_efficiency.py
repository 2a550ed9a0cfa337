import csv
import json

import pytest


def write_source(root, rows):
    """A tiny source: every image linked from images/, masks for those marked, two tables."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for image, _url, _label, masked in rows:
        (root / "images" / image).write_bytes(b"png")
        if masked:
            (root / "masks" / image).write_bytes(b"mask")
    with (root / "meta.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "patient_id", "url"])
        writer.writerows([image, f"p{i}", url] for i, (image, url, _, _) in enumerate(rows))
    with (root / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "label"])
        writer.writerows([image, label] for image, _, label, _ in rows)


ROWS = [
    ("a.png", "https://ml-workgroup/a", "covid", True),
    ("b.png", "https://other/b", "normal", False),
    ("c.png", "https://ml-workgroup/c", "ards", False),
    ("d.png", "https://other/d", "covid", True),
]


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def table_images(path):
    return [r["image"] for r in csv.DictReader(path.open())]


def test_split_site_moves_the_matching_rows_out_of_the_source(tmp_path, benchmark_module):
    le = benchmark_module("label_efficiency")
    source = tmp_path / "covid"
    write_source(source, ROWS)
    rest, site = le.split_site(source, tmp_path / "out", "hannover:url=ml-workgroup")
    assert names(site / "images") == ["a.png", "c.png"] and names(site / "masks") == ["a.png"]
    assert names(rest / "images") == ["b.png", "d.png"] and names(rest / "masks") == ["d.png"]
    assert (site / "images" / "a.png").resolve() == (source / "images" / "a.png").resolve()
    for folder, expected in ((site, ["a.png", "c.png"]), (rest, ["b.png", "d.png"])):
        assert table_images(folder / "labels.csv") == expected
        assert table_images(folder / "meta.csv") == expected


def test_split_site_reuses_only_folders_written_by_the_same_rule(tmp_path, benchmark_module):
    le = benchmark_module("label_efficiency")
    source, out = tmp_path / "covid", tmp_path / "out"
    write_source(source, ROWS)
    rest, site = le.split_site(source, out, "hannover:url=ml-workgroup")
    (site / "kept.txt").write_text("a file the split did not write")
    assert le.split_site(source, out, "hannover:url=ml-workgroup") == (rest, site)
    assert (site / "kept.txt").exists()  # reused, not written again
    with pytest.raises(SystemExit, match="another rule"):
        le.split_site(source, out, "hannover:url=other")


def test_split_site_writes_again_what_an_interrupted_split_left(tmp_path, benchmark_module):
    le = benchmark_module("label_efficiency")
    source, out = tmp_path / "covid", tmp_path / "out"
    write_source(source, ROWS)
    _, site = le.split_site(source, out, "hannover:url=ml-workgroup")
    (out / "sites" / "hannover.rule").unlink()  # as if stopped before the rule was written
    (site / "images" / "b.png").symlink_to(source / "images" / "b.png")  # a stray link
    le.split_site(source, out, "hannover:url=ml-workgroup")
    assert names(site / "images") == ["a.png", "c.png"]


@pytest.mark.parametrize(
    "spec, message",
    [("hannover", "expected NAME:COLUMN=TEXT"), ("h:site=x", "no column"), ("h:url=zz", "no row")],
)
def test_split_site_refuses_a_rule_it_cannot_apply(tmp_path, benchmark_module, spec, message):
    le = benchmark_module("label_efficiency")
    write_source(tmp_path / "covid", ROWS)
    with pytest.raises(SystemExit, match=message):
        le.split_site(tmp_path / "covid", tmp_path / "out", spec)


def result(seed, dice, auc, site=None):
    block = {
        "kermany_pneumonia": {"classification": {"accuracy": 0.9, "auc": auc}},
        "covid_ieee8023": {
            "segmentation": {"dice": dice},
            "classification": {"per_class": {"normal": {"recall": 0.5, "support": 2}}},
        },
    }
    if site:
        block[site] = {"segmentation": {"dice": dice - 0.1}}
    return {
        "method": "multimix", "class_labels": "100", "masks": "10", "seed": seed,
        "steps": 100 + seed, "site": site, **block, "adapted": block,
    }  # fmt: skip


def test_table_gives_mean_and_sd_over_seeds_and_pools_small_counts(benchmark_module):
    le = benchmark_module("label_efficiency")
    md = le.table([result(0, 0.90, 0.98), result(1, 0.94, 0.96)])
    head, _, row = md.strip().splitlines()
    cells = dict(zip(head.split(" | "), row.split(" | "), strict=True))
    assert cells["seeds"] == "2" and cells["steps"] == "100"
    assert cells["lung Dice (covid test)"] == "0.920 ± 0.028"
    assert cells["pneumonia AUC"] == "0.970 ± 0.014"
    assert cells["covid-set normals called normal"] == "0.500 ± 0.000 (2/4)"
    assert "held-out hospital" not in head


def test_table_adds_the_site_columns_only_when_a_run_has_a_site(benchmark_module):
    le = benchmark_module("label_efficiency")
    md = le.table([result(0, 0.90, 0.98, site="hannover")])
    head, _, row = md.strip().splitlines()
    cells = dict(zip(head.split(" | "), row.split(" | "), strict=True))
    assert cells["lung Dice, held-out hospital"] == "0.800"


def test_variants_become_train_flags_and_run_names(benchmark_module):
    le = benchmark_module("label_efficiency")
    spec = "multimix[guard=fixed;w-consistency=0.01]"
    assert le.base_method(spec) == "multimix"
    assert le.variant_flags(spec) == ["--guard", "fixed", "--w-consistency", "0.01"]
    assert le.run_key(spec, "100", "10", 2) == "multimix-guardfixed-w-consistency0.01-c100-m10-s2"
    assert le.run_key("unet", "0", "all") == "unet-c0-mall"
    assert list(le.configurations(["unet", "enc"], ["100", "all"], ["10"])) == [
        ("unet", "0", "10"), ("enc", "100", "0"), ("enc", "all", "0"),
    ]  # fmt: skip


def test_a_list_value_inside_a_variant_stays_one_method(benchmark_module):
    le = benchmark_module("label_efficiency")
    specs = le.split_methods("unet, multimix[widths=16,32,64;teacher=ema],enc")
    assert specs == ["unet", "multimix[widths=16,32,64;teacher=ema]", "enc"]
    assert le.variant_flags(specs[1]) == ["--widths", "16,32,64", "--teacher", "ema"]
    assert le.run_key(specs[1], "100", "10") == "multimix-widths16_32_64-teacherema-c100-m10"
    for bad in ("unet,,enc", "multimix[widths=16,32"):
        with pytest.raises(SystemExit, match="--methods"):
            le.split_methods(bad)


def test_label_folder_links_every_image_of_the_label(tmp_path, benchmark_module):
    le = benchmark_module("label_efficiency")
    source, out = tmp_path / "covid", tmp_path / "out"
    write_source(source, ROWS)
    name, label, folder = le.label_folder(source, out, "adult-normals:normal")
    assert (name, label, folder) == ("adult-normals", "normal", out / "labelled" / "adult-normals")
    assert names(folder / "images") == ["b.png"] and names(folder / "masks") == []
    assert table_images(folder / "labels.csv") == ["b.png"] == table_images(folder / "meta.csv")
    assert le.label_folder(source, out, "adult-normals:normal") == (name, label, folder)
    with pytest.raises(SystemExit, match="another label"):
        le.label_folder(source, out, "adult-normals:covid")
    with pytest.raises(SystemExit, match="no image"):
        le.label_folder(source, out, "x:effusion")
    with pytest.raises(SystemExit, match="NAME:LABEL"):
        le.label_folder(source, out, "normal")


def test_label_folder_scores_are_read_per_run_and_pooled(tmp_path, benchmark_module):
    le = benchmark_module("label_efficiency")
    folder = tmp_path / "labelled" / "adult-normals"
    for recall, run in ((4 / 11, "r0"), (6 / 11, "r1")):
        for suffix, value in (("", recall), ("_adapt", 2 / 11)):
            per_class = {"normal": {"recall": value, "support": 11}}
            block = {"sources": {folder.name: {"classification": {"per_class": per_class}}}}
            (tmp_path / run).mkdir(exist_ok=True)
            (tmp_path / run / f"adult-normals{suffix}_metrics.json").write_text(json.dumps(block))
    rows = []
    for seed, run in enumerate(("r0", "r1")):
        scores = le.score_label_folder(tmp_path / run, ("adult-normals", "normal", folder))
        rows.append(result(seed, 0.9, 0.98) | {"labelled": scores})
    head, _, row = (line.strip("| ") for line in le.table(rows).strip().splitlines())
    cells = dict(zip(head.split(" | "), row.split(" | "), strict=True))
    assert cells["adult-normals: called normal"] == "0.455 ± 0.129 (10/22)"
    assert cells["adult-normals: called normal, --adapt"] == "0.182 ± 0.000 (4/22)"
    assert le.score_label_folder(tmp_path / "r0", None) is None


def test_site_stands_for_the_held_out_images_alone(tmp_path, benchmark_module):
    le = benchmark_module("label_efficiency")
    write_source(tmp_path / "covid", ROWS)
    _, site = le.split_site(tmp_path / "covid", tmp_path / "out", "hannover:url=ml-workgroup")
    flags = le.site_flags(le.variant_flags("multimix[unlabeled-data=@site;guard=fixed]"), site)
    images = site.with_name("hannover-images")
    assert flags == ["--unlabeled-data", str(images), "--guard", "fixed"]
    assert names(images) == ["a.png", "c.png"]  # images only: no masks, no tables
    assert (images / "a.png").resolve() == (tmp_path / "covid" / "images" / "a.png").resolve()
    assert le.site_flags(["--guard", "fixed"], None) == ["--guard", "fixed"]
    with pytest.raises(SystemExit, match="@site needs --hold-out-site"):
        le.site_flags(["--unlabeled-data", "@site"], None)
