"""Label efficiency on real radiographs: every method at class labels x masks, same CPU budget.

    python benchmarks/label_efficiency.py --data ../shared/data --out benchmarks/results

Classification source: kermany_pneumonia; segmentation source: covid_ieee8023 (covid and ards
count as pneumonia). Each run trains through the CLI for the same wall-clock budget, then is
evaluated on the held-out, patient-grouped test parts of both sources. Finished runs are kept, so
an interrupted benchmark resumes where it stopped. Writes label_efficiency.json and .md.

``--hold-out-site NAME:COLUMN=TEXT`` moves one hospital out of the segmentation source: the
images whose ``meta.csv`` COLUMN contains TEXT are left out of training entirely and scored in
full as the folder NAME, a cross-hospital column of real radiographs (``covid_ieee8023``'s
``hannover:url=ml-workgroup`` is the 85 images, 66 with masks, of one hospital's repository).
In a variant, ``@site`` stands for that hospital's images alone (``--unlabeled-data``).
``--label-folder NAME:LABEL`` scores every segmentation-source image labelled LABEL as one
folder (by default the 11 normal adults, too few in any one test part).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

METHODS = ("unet", "enc", "encssl", "umtl", "umtls", "multimix-paper", "multimix")
USES_CLASS = {"enc", "encssl", "umtl", "umtls", "multimix-paper", "multimix"}
USES_MASKS = {"unet", "umtl", "umtls", "multimix-paper", "multimix"}
LABEL_MAP = "covid=pneumonia,ards=pneumonia"


def split_methods(text: str) -> list[str]:
    """``unet,multimix[widths=16,32;teacher=ema]`` -> two specs: commas inside [] are values."""
    specs, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            specs.append(text[start:i])
            start = i + 1
    specs.append(text[start:])
    if depth or any(not spec.strip() for spec in specs):
        raise SystemExit(f"--methods: cannot read {text!r} (an empty name or an unclosed [)")
    return [spec.strip() for spec in specs]


def run_key(method: str, n_cls: str, n_seg: str, seed: int = 0) -> str:
    name = method.replace("[", "-").replace("]", "").replace("=", "").replace(";", "-")
    name = name.replace(",", "_")
    return f"{name}-c{n_cls}-m{n_seg}" + (f"-s{seed}" if seed else "")


def base_method(spec: str) -> str:
    """``multimix[guard=fixed]`` -> ``multimix``: a variant is a method with options."""
    return spec.split("[", 1)[0]


def variant_flags(spec: str) -> list[str]:
    """``multimix[guard=fixed;w-consistency=0.01]`` -> ``--guard fixed --w-consistency 0.01``."""
    if "[" not in spec:
        return []
    flags = []
    for item in spec.split("[", 1)[1].rstrip("]").split(";"):
        key, _, value = item.partition("=")
        flags += [f"--{key.strip()}", value.strip()]
    return flags


def configurations(methods, class_counts, mask_counts):
    """Unique runs: a method that ignores class labels (or masks) is run once per other axis."""
    seen = set()
    for method in methods:
        base = base_method(method)
        for n_cls in class_counts if base in USES_CLASS else ["0"]:
            for n_seg in mask_counts if base in USES_MASKS else ["0"]:
                if (method, n_cls, n_seg) not in seen:
                    seen.add((method, n_cls, n_seg))
                    yield method, n_cls, n_seg


def multimix(*args: str) -> None:
    cmd = [sys.executable, "-m", "multimix", *map(str, args)]
    subprocess.run(cmd, check=True)


def phantoms(out: Path, size: int) -> dict[str, Path]:
    """Cross-domain phantom sources (written once): adult and pediatric style, with masks."""
    from multimix.data.phantom import write_source

    folders = {}
    for style, seed in (("adult", 101), ("pediatric", 102)):
        root = out / "phantoms" / style
        if not (root / "labels.csv").exists():
            write_source(root, count=80, seed=seed, size=size, mask_fraction=1.0, style=style)
        folders[style] = root
    return folders


def split_site(source: Path, out: Path, spec: str) -> tuple[Path, Path]:
    """``source`` without one site, and that site alone, as two source folders (written once).

    ``spec`` is ``NAME:COLUMN=TEXT``. Images are linked, not copied; ``labels.csv`` and
    ``meta.csv`` keep only their own rows, so the rest is split by patient as before. The rule
    is written last, beside the folders (``sites/NAME.rule``): folders are reused only when it
    is the same rule, and folders without it (an interrupted write) are written again.
    """
    name, _, rule = spec.partition(":")
    column, _, text = rule.partition("=")
    if not (name and column and text):
        raise SystemExit(f"--hold-out-site: expected NAME:COLUMN=TEXT, got {spec!r}")
    rest, site = out / "sites" / f"without-{name}" / source.name, out / "sites" / name
    record = out / "sites" / f"{name}.rule"
    written = f"{source.resolve()}\n{rule}\n"
    if record.exists():
        if record.read_text() == written:
            return rest, site
        raise SystemExit(
            f"--hold-out-site: {record} holds another rule or source; its runs were trained "
            f"without other images, so use another --out"
        )
    meta = list(csv.DictReader((source / "meta.csv").open()))
    if column not in meta[0]:
        raise SystemExit(f"--hold-out-site: {source / 'meta.csv'} has no column {column!r}")
    chosen = {r["image"] for r in meta if text in r[column]}
    if not chosen:
        raise SystemExit(f"--hold-out-site: no row of {source / 'meta.csv'} matches {rule!r}")
    write_subset(source, rest, lambda n: n not in chosen)
    write_subset(source, site, lambda n: n in chosen)
    record.write_text(written)
    return rest, site


def site_images(site: Path) -> Path:
    """The held-out site's images alone, linked into a plain folder beside it (written once):
    what a hospital would give as ``--unlabeled-data``. A folder of its own, so the site is
    still scored whole; those scores are then transductive (images seen, labels and masks
    never read)."""
    folder = site.with_name(f"{site.name}-images")
    if not folder.is_dir():
        partial = folder.with_name(f"{folder.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for f in sorted((site / "images").iterdir()):
            os.symlink(f.resolve(), partial / f.name)
        partial.rename(folder)
    return folder


def site_flags(flags: list[str], site: Path | None) -> list[str]:
    """Variant flags with ``@site`` standing for the held-out site's images
    (``multimix[unlabeled-data=@site]``)."""
    if "@site" in flags and site is None:
        raise SystemExit("--methods: @site needs --hold-out-site")
    return [str(site_images(site)) if flag == "@site" else flag for flag in flags]


def label_folder(source: Path, out: Path, spec: str) -> tuple[str, str, Path]:
    """Every image of ``source`` labelled LABEL, as the folder ``out/labelled/NAME`` (written
    once; ``spec`` is ``NAME:LABEL``), returned as (name, label, folder).

    ``covid_ieee8023`` holds 11 normal adults; each test part holds two or three of them, too
    few to tell methods apart, so ``adult-normals:normal`` scores all 11 as one folder (the
    issue's "normal adults called normal"). No run learns from these labels (the source gives
    masks, not class labels), but some of the images are in training parts unlabeled or masked.
    """
    name, _, label = spec.partition(":")
    if not (name and label):
        raise SystemExit(f"--label-folder: expected NAME:LABEL, got {spec!r}")
    folder, record = out / "labelled" / name, out / "labelled" / f"{name}.rule"
    written = f"{source.resolve()}\n{label}\n"
    if record.exists():
        if record.read_text() == written:
            return name, label, folder
        raise SystemExit(
            f"--label-folder: {record} holds another label or source; use another NAME"
        )
    chosen = {
        r["image"] for r in csv.DictReader((source / "labels.csv").open()) if r["label"] == label
    }
    if not chosen:
        raise SystemExit(
            f"--label-folder: no image of {source / 'labels.csv'} is labelled {label!r}"
        )
    write_subset(source, folder, lambda n: n in chosen)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(written)
    return name, label, folder


def write_subset(source: Path, folder: Path, keep) -> None:
    """``folder`` as ``source`` with only the images ``keep(name)`` accepts: images and masks
    linked, not copied; ``labels.csv`` and ``meta.csv`` keep only their rows."""
    shutil.rmtree(folder, ignore_errors=True)  # links and tables only
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
        for f in sorted((source / sub).iterdir()) if (source / sub).is_dir() else []:
            if keep(f.name):
                os.symlink(f.resolve(), folder / sub / f.name)
    for table_name in ("meta.csv", "labels.csv"):
        rows = list(csv.DictReader((source / table_name).open()))
        with (folder / table_name).open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(r for r in rows if keep(r["image"]))


def run_one(args, method: str, n_cls: str, n_seg: str, seed: int) -> dict:
    """Train (or resume, or reuse) one run, then evaluate it plainly and with --adapt."""
    kermany, covid, site = args.data / "kermany_pneumonia", args.covid, args.site
    ph = phantoms(args.out, args.image_size)
    run = args.out / "runs" / run_key(method, n_cls, n_seg, seed)
    plain, adapted = run / "test_metrics.json", run / "adapt_metrics.json"
    if not adapted.exists():
        start = time.time()
        if (run / "checkpoints" / "last.safetensors").exists() and not (
            run / "shift_reference.json"
        ).exists():
            multimix("train", "--resume", run)
        elif not (run / "shift_reference.json").exists():
            train = ["train", "--out", run, "--method", base_method(method)]
            train += [*site_flags(variant_flags(method), site), "--image-size", args.image_size]
            budget = ["--steps", args.steps] if args.steps else ["--max-minutes", args.minutes]
            train += [*budget, "--seed", seed, "--label-map", LABEL_MAP]
            train += ["--val-every", args.val_every, "--clock", args.clock]
            train += ["--precision", args.precision]
            if args.threads:
                train += ["--threads", args.threads]
            # Both sources in their roles for every method (a count of 0 where the method
            # ignores that label kind), so every run has the same patient-grouped split.
            train += ["--class-data", kermany, "--labeled-class", n_cls]
            train += ["--seg-data", covid, "--labeled-seg", n_seg]
            multimix(*train)
        sources = [
            "--data",
            kermany,
            "--data",
            covid,
            "--data",
            ph["adult"],
            "--data",
            ph["pediatric"],
            *(["--data", site] if site else []),
        ]
        multimix("evaluate", run, *sources, "--out", plain)
        multimix("evaluate", run, *sources[2:], "--out", adapted, "--adapt")
        print(f"{run.name}: {time.time() - start:.0f} s", flush=True)
    metrics = json.loads(plain.read_text())["sources"]
    adapt = json.loads(adapted.read_text())["sources"]
    steps = sum(1 for _ in (run / "train_log.csv").open()) - 1
    labelled = score_label_folder(run, args.labelled) if base_method(method) in USES_CLASS else None
    return {
        "method": method, "class_labels": n_cls, "masks": n_seg, "seed": seed, "steps": steps,
        "site": site.name if site else None, **metrics, "adapted": adapt, "labelled": labelled,
    }  # fmt: skip


def score_label_folder(run: Path, folder: tuple[str, str, Path] | None) -> dict | None:
    """The run's classification of a ``--label-folder``, plainly and with ``--adapt``: kept
    beside the run (``NAME_metrics.json``, ``NAME_adapt_metrics.json``), so runs finished
    before the folder was asked for are scored when reused."""
    if folder is None:
        return None
    name, label, path = folder
    scores = {"name": name, "label": label}
    for key, flags in (("plain", []), ("adapted", ["--adapt"])):
        out = run / f"{name}{'_adapt' if flags else ''}_metrics.json"
        if not out.exists():
            multimix("evaluate", run, "--data", path, "--out", out, *flags)
        block = json.loads(out.read_text())["sources"][path.name]["classification"]
        scores[key] = block["per_class"][label]
    return scores


def cell(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def get(block, *keys):
    """``block[k1][k2]...``, None where a level is missing."""
    for key in keys:
        block = block.get(key) if isinstance(block, dict) else None
    return block


def figures(r: dict) -> dict[str, float | None]:
    """The table's figures of one run (None where the method has no such output)."""
    base = base_method(r["method"])
    cls, seg = base in USES_CLASS, base in USES_MASKS
    kp, cv = "kermany_pneumonia", "covid_ieee8023"
    ph_ad, ph_ped = "adult", "pediatric"
    a, site = r["adapted"], r.get("site")
    return {
        "steps": r["steps"],
        "pneu_acc": get(r, kp, "classification", "accuracy") if cls else None,
        "pneu_auc": get(r, kp, "classification", "auc") if cls else None,
        "covid_acc": get(r, cv, "classification", "accuracy") if cls else None,
        "covid_normal": get(r, cv, *NORMAL_RECALL) if cls else None,
        "covid_normal_adapt": get(a, cv, *NORMAL_RECALL) if cls else None,
        "covid_normals": get(r, cv, *NORMAL_SUPPORT) if cls else None,
        "phantom_adult_acc": get(r, ph_ad, "classification", "accuracy") if cls else None,
        "phantom_adult_acc_adapt": get(a, ph_ad, "classification", "accuracy") if cls else None,
        "lung_dice": get(r, cv, "segmentation", "dice") if seg else None,
        "ped_dice": get(r, ph_ped, "segmentation", "dice") if seg else None,
        "ped_dice_adapt": get(a, ph_ped, "segmentation", "dice") if seg else None,
        "shift_covid": get(r, cv, "shift", "outside_share"),
        "shift_ped": get(r, ph_ped, "shift", "outside_share"),
        "site_dice": get(r, site, "segmentation", "dice") if seg and site else None,
        "site_dice_adapt": get(a, site, "segmentation", "dice") if seg and site else None,
        "shift_site": get(r, site, "shift", "outside_share") if site else None,
        "folder_called": get(r, "labelled", "plain", "recall"),
        "folder_called_adapt": get(r, "labelled", "adapted", "recall"),
        "folder_support": get(r, "labelled", "plain", "support"),
    }  # fmt: skip


NORMAL_RECALL = ("classification", "per_class", "normal", "recall")
NORMAL_SUPPORT = ("classification", "per_class", "normal", "support")
# Recalls on a handful of images: the cell also gives the images called normal over all seeds.
POOLED = {
    "covid_normal": "covid_normals", "covid_normal_adapt": "covid_normals",
    "folder_called": "folder_support", "folder_called_adapt": "folder_support",
}  # fmt: skip
COLUMNS = (
    ("steps", "steps"), ("pneu_acc", "pneumonia acc"), ("pneu_auc", "pneumonia AUC"),
    ("covid_acc", "covid-set acc"), ("covid_normal", "covid-set normals called normal"),
    ("covid_normal_adapt", "same, --adapt"), ("phantom_adult_acc", "adult phantoms acc"),
    ("phantom_adult_acc_adapt", "same, --adapt"), ("lung_dice", "lung Dice (covid test)"),
    ("ped_dice", "lung Dice, pediatric phantoms"), ("ped_dice_adapt", "same, --adapt"),
    ("shift_covid", "shift: covid test"), ("shift_ped", "shift: pediatric phantoms"),
)  # fmt: skip
SITE_COLUMNS = (
    ("site_dice", "lung Dice, held-out hospital"), ("site_dice_adapt", "same, --adapt"),
    ("shift_site", "shift: held-out hospital"),
)  # fmt: skip


def table(results: list[dict]) -> str:
    """One row per (method, labels, masks): the mean ± sd over its seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["method"], r["class_labels"], r["masks"]), []).append(figures(r))
    columns = COLUMNS + (SITE_COLUMNS if any(r.get("site") for r in results) else ())
    labelled = next((r["labelled"] for r in results if r.get("labelled")), None)
    if labelled:
        called = f"{labelled['name']}: called {labelled['label']}"
        columns += (("folder_called", called), ("folder_called_adapt", f"{called}, --adapt"))
    head = "| method | class labels | masks | seeds | " + " | ".join(c[1] for c in columns)
    lines = [head + " |", "|" + "---|" * (4 + len(columns))]
    for (method, n_cls, n_seg), rows in groups.items():
        cells = []
        for key, _ in columns:
            values = [r[key] for r in rows if r[key] is not None]
            if not values:
                cells.append("-")
            elif key == "steps":
                cells.append(f"{statistics.mean(values):.0f}")
            elif len(values) > 1:
                cells.append(f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}")
            else:
                cells.append(cell(values[0]))
            if key in POOLED and values:
                pairs = [(r[key], r[POOLED[key]]) for r in rows if r[key] is not None]
                if all(n is not None for _, n in pairs):
                    called = sum(round(v * n) for v, n in pairs)
                    cells[-1] += f" ({called}/{sum(n for _, n in pairs)})"
        shown_cls = n_cls if base_method(method) in USES_CLASS else "-"
        shown_seg = n_seg if base_method(method) in USES_MASKS else "-"
        lines.append(
            f"| {method} | {shown_cls} | {shown_seg} | {len(rows)} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget per run")
    parser.add_argument("--steps", type=int, default=0, help="train N steps instead (0: minutes)")
    parser.add_argument("--clock", default="cpu", help="wall or cpu (fair on a shared machine)")
    parser.add_argument("--threads", type=int, default=1, help="threads per run (0: all)")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at the same time")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--val-every", type=int, default=25)
    parser.add_argument(
        "--methods",
        default="multimix,multimix-paper,unet,enc",
        help="comma-separated; a variant adds train options: multimix[guard=fixed;teacher=ema]; "
        "@site is the held-out site's images: multimix[unlabeled-data=@site]",
    )
    parser.add_argument("--class-labels", default="100")
    parser.add_argument("--masks", default="10")
    parser.add_argument("--name", default="label_efficiency", help="JSON/markdown file stem")
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16 (train)")
    parser.add_argument(
        "--hold-out-site",
        default="",
        help="NAME:COLUMN=TEXT: covid_ieee8023 images whose meta.csv COLUMN contains TEXT are "
        "left out of training and scored as their own folder (hannover:url=ml-workgroup)",
    )
    parser.add_argument(
        "--label-folder",
        default="adult-normals:normal",
        help="NAME:LABEL: every covid_ieee8023 image labelled LABEL, scored as one folder by "
        "each classifying run, plainly and with --adapt (empty: none)",
    )
    args = parser.parse_args()
    args.covid, args.site = args.data / "covid_ieee8023", None
    args.labelled = (
        label_folder(args.covid, args.out, args.label_folder) if args.label_folder else None
    )
    if args.hold_out_site:  # once, before runs start in parallel
        args.covid, args.site = split_site(args.covid, args.out, args.hold_out_site)
        if "@site" in args.methods:  # written here, not by runs started in parallel
            site_images(args.site)
    class_counts, mask_counts = args.class_labels.split(","), args.masks.split(",")
    seeds = [int(x) for x in args.seeds.split(",")]
    confs = [
        (*conf, seed)
        for seed in seeds
        for conf in configurations(split_methods(args.methods), class_counts, mask_counts)
    ]
    phantoms(args.out, args.image_size)  # once, before runs start in parallel
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda conf: run_one(args, *conf), confs))
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) for k, v in vars(args).items()}
    settings["labelled"] = str(args.labelled[2]) if args.labelled else ""
    from multimix.engine.precision import cpu_model

    settings["cpu"] = cpu_model()
    (args.out / f"{args.name}.json").write_text(
        json.dumps({"settings": settings, "results": results}, indent=1)
    )
    md = table(results)
    (args.out / f"{args.name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
