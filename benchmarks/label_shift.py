"""Would re-estimating the class prior on a new folder recover its normals? (EM, label shift)

    python benchmarks/label_shift.py --runs RUN [RUN ...] --data FOLDER [FOLDER ...] --out F.json

Writes ``F.json`` and the same figures as a table in ``F.md``.

Saerens, Latinne and Decaestecker (2002) re-estimate a target folder's class prior by EM on the
classifier's posteriors, assuming only the prior moved (p(x | y) fixed), and reweight the
posteriors by the new prior over the training one. A classifier trained on pediatric labels
calls most normal adults pneumonia; if that were a prior shift, EM on an adult folder would
move the calls toward its true mix without a label. This script measures it per run and
folder before building it into ``--adapt``. The training prior is the class frequency of the
run's labelled training images. A folder that is one of the run's training sources is scored on
its test part only (the run's ``split.json``); any other folder on every labelled image. Labels
pass through the run's ``label_map``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

import multimix.api as mm
from multimix.data.assemble import load_split
from multimix.data.io import read_image
from multimix.data.labels import LabelSpace
from multimix.data.sources import load_source
from multimix.pipelines.evaluate import held_out_records
from run_results import folder_table, score_folders


def em_prior(probs: np.ndarray, train_prior: np.ndarray, iters: int = 200, tol: float = 1e-7):
    """EM for the target prior: ``probs`` (N, C) posteriors under ``train_prior`` (C,).

    Returns the adapted posteriors and the estimated prior. A folder whose posteriors already
    average to ``train_prior`` is a fixed point: nothing moves.
    """
    probs = probs.astype(np.float64)
    prior = train_prior.astype(np.float64)
    for _ in range(max(1, iters)):
        adapted = probs * (prior / train_prior)
        adapted /= adapted.sum(axis=1, keepdims=True)
        new = adapted.mean(axis=0)
        done = np.abs(new - prior).max() < tol
        prior = new
        if done:
            break
    return adapted, prior


def labelled_images(folder: Path, run: Path, labels: LabelSpace) -> list[tuple[Path, int]]:
    """``(image, class index)`` for the folder's labelled images that training never saw (its
    test part where the run trained on it, else all of it)."""
    records, _ = held_out_records(load_source(folder), load_split(run / "split.json"), "test")
    return [(r.image, labels.index(r.label, r.image)) for r in records if r.label is not None]


@functools.cache
def train_prior(run: Path, classes: tuple[str, ...], mapping: tuple[tuple[str, str], ...]):
    """Class frequencies of the run's labelled training images (``split.json``), once per run."""
    labels = LabelSpace(classes, dict(mapping))
    split = load_split(run / "split.json")
    counts = np.zeros(len(classes))
    for source, names in split["labeled_class"].items():
        chosen = set(names)
        for r in load_source(split["sources"][source]["root"], name=source).records:
            if r.name in chosen and r.label is not None:
                counts[labels.index(r.label, r.image)] += 1
    return counts / counts.sum()


def folder_figures(model: mm.Model, run: Path, folder: Path) -> dict:
    mapping = tuple(sorted(model.cfg.label_map.items()))
    prior = train_prior(run, tuple(model.classes), mapping)
    items = labelled_images(folder, run, LabelSpace(tuple(model.classes), dict(mapping)))
    images = [read_image(image) for image, _ in items]
    probs = []
    for i in range(0, len(images), 64):
        for p in model.predict_images(images[i : i + 64]):
            probs.append([p.probabilities[c] for c in model.classes])
    probs = np.asarray(probs, dtype=np.float64)
    truth = np.array([k for _, k in items])
    adapted, estimated = em_prior(probs, prior)
    figures = {"images": len(items)}
    for tag, p in (("plain", probs), ("em", adapted)):
        called = p.argmax(axis=1)
        figures[f"accuracy_{tag}"] = float((called == truth).mean())
        figures[f"recall_{tag}"] = {
            c: int(((called == k) & (truth == k)).sum()) for k, c in enumerate(model.classes)
        }
    figures["support"] = {c: int((truth == k).sum()) for k, c in enumerate(model.classes)}
    figures["prior_em"] = {c: float(estimated[k]) for k, c in enumerate(model.classes)}
    return figures


def table(results: dict[str, dict[str, dict]]) -> str:
    """One row per run and folder: accuracy and per-class hits, plain and after EM."""

    def counts(d: dict) -> str:
        return ", ".join(f"{c} {v}" for c, v in d.items())

    def cells(f: dict) -> list[str]:
        prior = ", ".join(f"{c} {v:.3f}" for c, v in f["prior_em"].items())
        return [
            str(f["images"]), counts(f["support"]), f"{f['accuracy_plain']:.4f}",
            counts(f["recall_plain"]), prior, f"{f['accuracy_em']:.4f}", counts(f["recall_em"]),
        ]  # fmt: skip

    header = ["images", "support", "acc", "hits", "EM prior", "acc, EM", "hits, EM"]
    return folder_table(results, header, cells)


def main() -> None:
    score_folders(__doc__, folder_figures, table)


if __name__ == "__main__":
    main()
