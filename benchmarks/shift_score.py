"""Does the shift score tell other hospitals and phantoms from data like the training data?

    python benchmarks/shift_score.py --runs RUN [RUN ...] --data FOLDER [FOLDER ...] --out F.json

For each run, the feature reference is rebuilt by the library's own code
(``engine.finalize.write_shift_reference``, into ``OUT_DIR/references/RUN``; the run folder
is not touched) from the run's training and validation images (``split.json``). Each
training source's test part and each extra folder then gets the ``shift`` block ``evaluate``
writes (the share of images outside the 95% range of the nearest source's validation images)
and, to judge the distance itself without the threshold, the AUROC of its images' distances
against that source's validation distances (0.5: indistinguishable from in-distribution).

``--baseline`` adds the score multimix used before (a diagonal distance of the pooled
bottleneck features alone), computed here for the comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata

from multimix.data.assemble import load_split
from multimix.data.bank import load_bank
from multimix.data.sources import load_source
from multimix.engine.evaluate import load_run
from multimix.engine.finalize import write_shift_reference
from multimix.models.shift import distances, pooled_features, read_reference, shift_score
from multimix.pipelines.evaluate import held_out_records
from run_results import run_parser, write_results


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    ranks = rankdata(np.r_[inside, outside])
    n_out = len(outside)
    return float((ranks[len(inside) :].sum() - n_out * (n_out + 1) / 2) / (n_out * len(inside)))


def diagonal_score(train: torch.Tensor, val: torch.Tensor, x: torch.Tensor) -> float:
    """The earlier score: share of ``x`` outside the validation 95% range of a per-channel
    standardised distance of the bottleneck's pooled features."""
    mean, std = train.mean(0), train.std(0).clamp_min(1e-4)

    def dist(f: torch.Tensor) -> np.ndarray:
        return ((f - mean) / std).pow(2).mean(1).sqrt().numpy()

    return float((dist(x) > np.percentile(dist(val), 95)).mean())


def study_run(run: Path, extra: list[Path], out: Path, baseline: bool) -> dict:
    device = torch.device("cpu")
    cfg, model = load_run(run, device=device)
    split = load_split(run / "split.json")
    size, structures = cfg.image_size, tuple(cfg.structures)
    records, roles = [], []
    tests: dict[str, Path] = {}
    for name, info in split["sources"].items():
        source = load_source(info["root"], name=name)
        for part in ("train", "val"):
            chosen, _ = held_out_records(source, split, part)
            records += chosen
            roles += [part] * len(chosen)
        tests[name] = Path(info["root"])
    bank = load_bank(records, size, structures, None, f"loading {run.name}")
    roles_t = np.array(roles)
    train_rows = torch.from_numpy(np.flatnonzero(roles_t == "train"))
    val_rows = {}
    for row in np.flatnonzero(roles_t == "val"):
        val_rows.setdefault(bank.records[row].source, []).append(int(row))
    val_rows = {k: torch.tensor(v) for k, v in val_rows.items()}
    ref_dir = out / "references" / run.name
    ref_dir.mkdir(parents=True, exist_ok=True)
    write_shift_reference(ref_dir, model, bank, train_rows, val_rows, cfg.seed, device)
    reference = read_reference(ref_dir)
    val_feats = {k: pooled_features(model, bank.images[v], device) for k, v in val_rows.items()}
    bottleneck = {}
    if baseline:  # the earlier score's features: the last level only
        last = model.encode(torch.zeros(1, 1, size, size))[-1].shape[1]
        for name in val_rows:
            rows = train_rows[[bank.records[r].source == name for r in train_rows.tolist()]]
            train_f = pooled_features(model, bank.images[rows], device)[:, -last:]
            bottleneck[name] = (train_f, val_feats[name][:, -last:], last)
    folders: list[tuple[str, list]] = []
    for name, root in tests.items():
        chosen, _ = held_out_records(load_source(root, name=name), split, "test")
        folders.append((f"{name} test", chosen))
    for folder in extra:
        folders.append((folder.name, list(load_source(folder).records)))
    result = {}
    for label, recs in folders:
        images = load_bank(recs, size, structures, None, label).images
        feats = pooled_features(model, images, device)
        block = shift_score(feats, reference)
        near = block["nearest_source"]
        ref = reference["sources"][near]
        block["auroc"] = auroc(distances(val_feats[near], ref), distances(feats, ref))
        if baseline:
            per_source = [diagonal_score(t, v, feats[:, -n:]) for t, v, n in bottleneck.values()]
            block["baseline_outside_share"] = min(per_source)
        result[label] = block
        print(run.name, label, json.dumps(block), flush=True)
    return result


def table(results: dict) -> str:
    folders = list(next(iter(results.values())))
    head = "| run | " + " | ".join(folders) + " |"
    lines = [head, "|" + "---|" * (len(folders) + 1)]
    for run, per in results.items():
        cells = []
        for f in folders:
            b = per[f]
            cell = f"{b['outside_share']:.2f} (AUROC {b['auroc']:.2f})"
            if "baseline_outside_share" in b:
                cell += f", before {b['baseline_outside_share']:.2f}"
            cells.append(cell)
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = run_parser(__doc__)
    parser.add_argument("--baseline", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {
        run.name: study_run(run, args.data, args.out.parent, args.baseline) for run in args.runs
    }
    write_results(args.out, args.runs, args.data, results, table(results))


if __name__ == "__main__":
    main()
