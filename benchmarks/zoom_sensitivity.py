"""Does a run's classification depend on how large the chest appears in the frame?

    python benchmarks/zoom_sensitivity.py --runs RUN [RUN ...] --data FOLDER [FOLDER ...] \
        --out F.json [--zooms 0.8,0.9,1,1.1,1.25] [--label-map covid=pneumonia]

Hospitals frame chest films differently (a child on a large detector, an adult chest filling
it), so a classifier that reads the chest's apparent size as a cue fails at the next hospital
for a reason no pixel of pathology explains. Each image is zoomed about its centre: by a
factor above 1, the central ``1 / factor`` of it is enlarged back to full size (a crop); below
1, it is shrunk and its border pixels are repeated outwards. Nothing is learnt here: every
run predicts through :class:`multimix.api.Model`, as ``predict`` does.

Each training source's test part (from the run's ``split.json``) and each ``--data`` folder
gets, per zoom: the accuracy, the AUC of the first non-normal class where both occur, the
share of images called each class per true class, and ``changed``: the share of images
whose call differs from the unzoomed one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import multimix.api as mm
from multimix.data.assemble import load_split
from multimix.data.io import read_image
from multimix.data.sources import Record, load_source
from multimix.pipelines.evaluate import held_out_records
from run_results import run_parser, write_results
from shift_score import auroc

ZOOMS = (0.8, 0.9, 1.0, 1.1, 1.25)


def zoom(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` (H x W, [0, 1]) as seen ``factor`` times larger, same size."""
    if factor == 1.0:
        return image
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    h, w = image.shape
    if factor > 1.0:
        ch, cw = round(h / factor), round(w / factor)
        y, x = (h - ch) // 2, (w - cw) // 2
        out = F.interpolate(t[..., y : y + ch, x : x + cw], size=(h, w), mode="bilinear")
    else:
        sh, sw = round(h * factor), round(w * factor)
        small = F.interpolate(t, size=(sh, sw), mode="area")
        top, left = (h - sh) // 2, (w - sw) // 2
        out = F.pad(small, (left, w - sw - left, top, h - sh - top), mode="replicate")
    return out[0, 0].clamp(0, 1).numpy()


def score(probs: np.ndarray, truth: list[str | None], classes: list[str]) -> dict:
    called = [classes[i] for i in probs.argmax(1)]
    block: dict = {"n": len(called)}
    known = [i for i, t in enumerate(truth) if t in classes]
    if known:
        block["accuracy"] = float(np.mean([called[i] == truth[i] for i in known]))
    positive = next((c for c in classes if c != "normal"), classes[-1])
    k = classes.index(positive)
    pos = [probs[i, k] for i in known if truth[i] == positive]
    neg = [probs[i, k] for i in known if truth[i] != positive]
    if pos and neg:
        block["auc"] = auroc(np.array(neg), np.array(pos))
    shares = {}
    for t in sorted({t for t in truth if t is not None}):
        rows = [i for i, v in enumerate(truth) if v == t]
        shares[t] = {c: float(np.mean([called[i] == c for i in rows])) for c in classes}
    block["called"] = shares
    block["calls"] = called
    return block


def study_run(model: mm.Model, sets: dict[str, list[Record]], zooms, label_map) -> dict:
    classes = list(model.info()["classes"])
    result = {}
    for name, records in sets.items():
        images = [read_image(r.image) for r in records]
        truth = [label_map.get(r.label, r.label) if r.label else None for r in records]
        per_zoom = {}
        for f in zooms:
            preds = model.predict_images([zoom(a, f) for a in images])
            probs = np.array([[p.probabilities[c] for c in classes] for p in preds])
            per_zoom[f"{f:g}"] = score(probs, truth, classes)
        base = per_zoom.get("1", {}).get("calls")
        for block in per_zoom.values():
            calls = block.pop("calls")
            if base is not None:
                moved = [a != b for a, b in zip(calls, base, strict=True)]
                block["changed"] = float(np.mean(moved))
        result[name] = per_zoom
        accuracy = {k: round(v.get("accuracy", -1), 3) for k, v in per_zoom.items()}
        print(model.run.name, name, accuracy, flush=True)
    return result


def held_out_sets(run, extra) -> dict[str, list[Record]]:
    split = load_split(run / "split.json")
    sets = {}
    for name, info in split["sources"].items():
        if "class" in info.get("roles", []):
            source = load_source(info["root"], name=name)
            sets[f"{name} test"] = held_out_records(source, split, "test")[0]
    for folder in extra:
        sets[folder.name] = list(load_source(folder).records)
    return sets


def table(results: dict) -> str:
    lines = [
        "| run | set | zoom | accuracy | AUC | calls changed | called normal, per true class |",
        "|---|---|---|---|---|---|---|",
    ]
    for run, per_set in results.items():
        for name, per_zoom in per_set.items():
            for f, b in per_zoom.items():
                normal = ", ".join(
                    f"{t} {s.get('normal', float('nan')):.2f}" for t, s in b["called"].items()
                )
                acc = f"{b['accuracy']:.3f}" if "accuracy" in b else "-"
                auc = f"{b['auc']:.3f}" if "auc" in b else "-"
                changed = f"{b.get('changed', 0):.3f}"
                lines.append(f"| {run} | {name} | {f} | {acc} | {auc} | {changed} | {normal} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = run_parser(__doc__)
    parser.add_argument("--zooms", default=",".join(f"{z:g}" for z in ZOOMS))
    parser.add_argument("--label-map", default="covid=pneumonia,ards=pneumonia")
    args = parser.parse_args()
    torch.set_num_threads(1)
    zooms = [float(z) for z in args.zooms.split(",")]
    label_map = dict(p.split("=") for p in args.label_map.split(",") if p)
    results = {}
    for run in args.runs:
        model = mm.load(run, device="cpu")
        key = f"{run.parent.parent.name}/{run.name}"
        results[key] = study_run(model, held_out_sets(run, args.data), zooms, label_map)
    write_results(args.out, args.runs, args.data, results, table(results))


if __name__ == "__main__":
    main()
