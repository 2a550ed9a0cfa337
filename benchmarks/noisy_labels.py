"""Which multi-label loss to use when: BCE, GCE, focal, label smoothing and positive weights,
on clean and on noisy labels (phantoms, classification alone, same step budget).

    python benchmarks/noisy_labels.py --out benchmarks/results

Uses the phantoms of ``multitask.py`` (same images, labels flipped per finding with probability
``--noise``; clean test folder) and writes noisy_labels.json and noisy_labels.md.
"""

from __future__ import annotations

import json
import statistics

from multitask import one_run, parse_args, phantoms

VARIANTS: dict[str, dict] = {
    "bce": {},
    "gce (q=0.7)": {"loss": "gce"},
    "focal (gamma=2)": {"loss": "focal"},
    "bce + smoothing 0.1": {"label_smoothing": 0.1},
    "bce + pos-weight auto": {"pos_weight": "auto"},
}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], "0,0.4")
    folders = phantoms(args)
    results = []
    for noise in args.noise:
        for i, (name, options) in enumerate(VARIANTS.items()):
            for seed in args.seeds:
                run = args.out / "multitask" / "loss_runs" / f"noise{noise:g}-v{i}-s{seed}"
                r = one_run(
                    args, folders[f"{noise:g}"], folders["test"], [], seed, run, 1, **options
                )
                results.append({"noise": f"{noise:g}", "variant": name, "seed": seed, **r})
                print(f"noise {noise:g} {name} seed {seed}: mean AUC {r['mean_auc']:.3f}",
                      flush=True)  # fmt: skip
    lines = [
        "| label noise | loss | mean AUC | macro F1 |",
        "|---|---|---|---|",
    ]
    for noise in args.noise:
        for name in VARIANTS:
            rs = [r for r in results if r["noise"] == f"{noise:g}" and r["variant"] == name]
            auc = [r["mean_auc"] for r in rs]
            f1 = [r["f1_macro"] for r in rs]
            lines.append(
                f"| {noise:g} | {name} | {statistics.mean(auc):.3f} ± {statistics.stdev(auc):.3f}"
                f" | {statistics.mean(f1):.3f} ± {statistics.stdev(f1):.3f} |"
            )
    table = "\n".join(lines) + "\n"
    (args.out / "noisy_labels.json").write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": results}, indent=1)
    )
    (args.out / "noisy_labels.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
