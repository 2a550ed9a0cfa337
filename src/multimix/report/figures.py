"""Matplotlib figures for the evaluation report.

Every function takes plain numpy / list data and an output path, writes one PNG (dpi 100),
closes its figure and returns the path. The Agg backend is forced so that figures render
without a display.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from multimix.core.atomic import atomic_write

if TYPE_CHECKING:
    from multimix.report.html import Gallery

DPI = 100
LOSS_COLUMNS = ("loss", "loss_seg", "loss_cls", "loss_pseudo", "loss_kl")
SMOOTH_WINDOW = 20
PRED_COLOR = "#ff3b30"  # predicted mask outline
TRUE_COLOR = "#34c759"  # reference mask outline
REGION_COLOR = "#00c8ff"  # the region a method judged the image on (kacl's CAM region)
HEAT_CMAP = "inferno"  # explanation maps
_METRIC_STYLES = {"accuracy": "-", "auc": "--", "dice": ":"}


def _save(fig: plt.Figure, path: str | Path) -> Path:
    """Save ``fig`` as PNG atomically and close it."""
    path = Path(path)
    try:
        atomic_write(path, lambda fh: fig.savefig(fh, dpi=DPI, format="png", bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


def _to_float(value: object) -> float:
    """Parse a CSV cell; empty / missing / unparsable -> NaN."""
    if value is None:
        return math.nan
    try:
        return float(str(value).strip())
    except ValueError:
        return math.nan


def _column(rows: Sequence[dict[str, str]], key: str) -> np.ndarray:
    return np.array([_to_float(r.get(key)) for r in rows], dtype=float)


def _steps(rows: Sequence[dict[str, str]]) -> np.ndarray:
    steps = _column(rows, "step")
    missing = ~np.isfinite(steps)
    steps[missing] = np.arange(len(rows), dtype=float)[missing]
    return steps


def running_mean(values: np.ndarray, window: int = SMOOTH_WINDOW) -> np.ndarray:
    """Trailing running mean over ``window`` points (shorter at the start)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return values
    window = max(1, min(int(window), values.size))
    csum = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(values.size)
    lo = np.maximum(0, idx - window + 1)
    return (csum[idx + 1] - csum[lo]) / (idx + 1 - lo)


def _plain(text: object) -> str:
    """Text safe for matplotlib (no accidental mathtext from ``$``)."""
    return str(text).replace("$", r"\$")


def _empty_panel(ax: plt.Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", color="0.45", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def training_curves(
    train_log: Sequence[dict[str, str]],
    val_log: Sequence[dict[str, str]],
    path: str | Path,
) -> Path:
    """Losses vs step (left) and validation metrics vs step (right)."""
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(12, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    # --- losses -----------------------------------------------------------------
    plotted = 0
    if train_log:
        steps = _steps(train_log)
        positive = True
        lo, hi = math.inf, 0.0
        for key in LOSS_COLUMNS:
            vals = _column(train_log, key)
            ok = np.isfinite(vals)
            if not ok.any():
                continue
            x, y = steps[ok], vals[ok]
            color = colors[plotted % len(colors)]
            ax_loss.plot(x, y, color=color, alpha=0.25, lw=0.8)
            ax_loss.plot(x, running_mean(y), color=color, lw=1.8, label=key)
            positive &= bool((y > 0).all())
            lo, hi = min(lo, float(y.min())), max(hi, float(y.max()))
            plotted += 1
        if plotted and positive and lo > 0 and hi / lo > 50:
            ax_loss.set_yscale("log")
    if plotted:
        ax_loss.set_xlabel("step")
        ax_loss.set_ylabel("loss")
        ax_loss.set_title(f"Training losses (running mean over {SMOOTH_WINDOW} steps)")
        ax_loss.grid(alpha=0.3)
        ax_loss.legend(fontsize=9, frameon=False)
    else:
        ax_loss.set_title("Training losses")
        _empty_panel(ax_loss, "no training log")

    # --- validation metrics ---------------------------------------------------
    plotted = 0
    if val_log:
        steps = _steps(val_log)
        keys: list[str] = []
        for row in val_log:
            for key in row:
                if "/" in key and key not in keys:
                    keys.append(key)
        sources = sorted({k.rsplit("/", 1)[0] for k in keys})
        for key in sorted(keys):
            vals = _column(val_log, key)
            ok = np.isfinite(vals)
            if not ok.any():
                continue
            source, metric = key.rsplit("/", 1)
            color = colors[sources.index(source) % len(colors)]
            ax_val.plot(
                steps[ok],
                vals[ok],
                color=color,
                ls=_METRIC_STYLES.get(metric, "-."),
                marker="o",
                ms=3,
                lw=1.5,
                label=_plain(key),
            )
            plotted += 1
        score = _column(val_log, "score")
        ok = np.isfinite(score)
        if ok.any():
            ax_val.plot(steps[ok], score[ok], color="black", lw=2.2, alpha=0.6, label="score")
            plotted += 1
    if plotted:
        ax_val.set_xlabel("step")
        ax_val.set_ylabel("metric")
        ax_val.set_title("Validation metrics")
        ax_val.grid(alpha=0.3)
        ax_val.legend(fontsize=8, frameon=False, loc="best")
    else:
        ax_val.set_title("Validation metrics")
        _empty_panel(ax_val, "no validation log")

    fig.tight_layout()
    return _save(fig, path)


def confusion_matrix(
    confusion: Sequence[Sequence[float]] | np.ndarray,
    classes: Sequence[str],
    path: str | Path,
    title: str = "Confusion matrix",
) -> Path:
    """Confusion matrix heat map, rows = true class, columns = predicted class."""
    cm = np.asarray(confusion, dtype=float)
    if cm.ndim != 2:
        cm = np.zeros((0, 0))
    n_rows, n_cols = cm.shape
    labels = list(classes)
    row_labels = labels if len(labels) == n_rows else [str(i) for i in range(n_rows)]
    col_labels = labels if len(labels) == n_cols else [str(i) for i in range(n_cols)]

    side = max(3.6, 1.0 + 0.9 * max(n_rows, n_cols, 1))
    fig, ax = plt.subplots(figsize=(side + 0.8, side))
    if cm.size == 0:
        _empty_panel(ax, "no confusion matrix")
        ax.set_title(_plain(title))
        return _save(fig, path)

    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(float(np.nanmax(cm)), 1.0))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    row_tot = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(row_tot > 0, cm / row_tot, np.nan)
    thresh = np.nanmax(cm) / 2.0
    for i in range(n_rows):
        for j in range(n_cols):
            value = cm[i, j]
            text = f"{int(value)}" if float(value).is_integer() else f"{value:.2f}"
            if np.isfinite(frac[i, j]):
                text += f"\n({100 * frac[i, j]:.0f}%)"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=11,
                color="white" if value > thresh else "black",
            )
    tilt = n_cols > 3
    ax.set_xticks(
        range(n_cols),
        [_plain(c) for c in col_labels],
        rotation=30 if tilt else 0,
        ha="right" if tilt else "center",
    )
    ax.set_yticks(range(n_rows), [_plain(r) for r in row_labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(_plain(title))
    fig.tight_layout()
    return _save(fig, path)


def _outline(ax: plt.Axes, mask: np.ndarray, color: str) -> None:
    """Draw the 0.5 iso-line of ``mask``; nothing for empty / full masks."""
    m = np.asarray(mask, dtype=float)
    if m.ndim != 2 or m.min() == m.max():
        return
    ax.contour(m, levels=[0.5], colors=[color], linewidths=1.4)


def _heat_overlay(ax: plt.Axes, image: np.ndarray, heat: np.ndarray) -> None:
    """Radiograph in gray with the explanation map on top (transparent where it is ~0)."""
    vmax = 255 if image.dtype == np.uint8 else None
    ax.imshow(image, cmap="gray", vmin=0 if vmax else None, vmax=vmax, interpolation="nearest")
    heat = np.asarray(heat, dtype=float)
    ax.imshow(
        np.ma.masked_less(heat, 0.05),
        cmap=HEAT_CMAP,
        vmin=0,
        vmax=1,
        alpha=0.6,
        interpolation="nearest",
    )


def mask_gallery(gallery: Gallery, path: str | Path, max_images: int = 12) -> Path:
    """Grid of radiographs with predicted (and, when known, true) mask outlines.

    When the gallery has ``heatmaps``, each radiograph is followed by its explanation map.
    """
    images = np.asarray(gallery.images)
    n = min(len(images), max(0, int(max_images)))
    has_true = gallery.true_masks is not None
    heatmaps = gallery.heatmaps
    per_item = 2 if heatmaps is not None else 1
    items_per_row = 4 if per_item == 1 else 3
    ncols = max(1, min(n, items_per_row)) * per_item
    nrows = max(1, math.ceil(n / items_per_row))
    width = 3.0 if per_item == 1 else 2.6
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(width * ncols, (width + 0.5) * nrows + 0.6),
        squeeze=False,
        subplot_kw={"xticks": [], "yticks": []},  # no tick layout to compute: much faster
    )
    for ax in axes.flat:
        ax.axis("off")
    if n == 0:
        _empty_panel(axes[0, 0], "no images")
    titles = list(gallery.titles)
    wrap = 44 if per_item == 1 else 30
    for k in range(n):
        ax = axes.flat[k * per_item]
        img = images[k]
        vmax = 255 if img.dtype == np.uint8 else None
        ax.imshow(img, cmap="gray", vmin=0 if vmax else None, vmax=vmax, interpolation="nearest")
        if has_true:
            _outline(ax, gallery.true_masks[k], TRUE_COLOR)
        if gallery.pred_masks is not None and k < len(gallery.pred_masks):
            _outline(ax, gallery.pred_masks[k], PRED_COLOR)
        caption = titles[k] if k < len(titles) else ""
        ax.set_title(_plain("\n".join(textwrap.wrap(caption, wrap))) or " ", fontsize=8)
        if heatmaps is not None:
            ax_heat = axes.flat[k * per_item + 1]
            _heat_overlay(ax_heat, img, heatmaps[k])
            ax_heat.set_title(_plain(gallery.heatmap_name), fontsize=8)
        if gallery.regions is not None and k < len(gallery.regions):
            _outline(axes.flat[k * per_item + per_item - 1], gallery.regions[k], REGION_COLOR)

    handles = [Line2D([], [], color=PRED_COLOR, lw=2, label="predicted mask")]
    if has_true:
        handles.append(Line2D([], [], color=TRUE_COLOR, lw=2, label="reference mask"))
    if heatmaps is not None:
        handles.append(
            Patch(color=plt.get_cmap(HEAT_CMAP)(0.85), label="explanation (strong = bright)")
        )
    if gallery.regions is not None:
        handles.append(Line2D([], [], color=REGION_COLOR, lw=2, label="region used"))
    heading = gallery.heading
    title = gallery.source if heading in ("", "Examples") else f"{gallery.source}: {heading}"
    fig.suptitle(_plain(title), fontsize=12)
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97), h_pad=1.5)
    return _save(fig, path)


def roc_curves(
    probs: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    path: str | Path,
    title: str = "ROC curve",
) -> Path:
    """ROC curves: binary, of the positive class (the second); else one-vs-rest per class.

    The legend gives each curve's AUC; a class that is absent (or the only one present) has no
    curve.
    """
    probs = np.asarray(probs, dtype=float)
    labels = np.asarray(labels)
    n_classes = probs.shape[1] if probs.ndim == 2 else 0
    names = list(classes) if len(classes) == n_classes else [str(c) for c in range(n_classes)]
    shown = [1] if n_classes == 2 else list(range(n_classes))
    fig, ax = plt.subplots(figsize=(5.0, 4.6))
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="chance")
    drawn = 0
    for c in shown:
        positive = labels == c
        if positive.all() or not positive.any():
            continue
        fpr, tpr = roc_points(probs[:, c], positive)
        auc = float(np.trapezoid(tpr, fpr))
        label = f"{names[c]} (AUC {auc:.3f})"
        if n_classes == 2:
            label = f"positive: {names[c]} (AUC {auc:.3f})"
        ax.plot(fpr, tpr, lw=2, label=_plain(label))
        drawn += 1
    return _finish_roc(fig, ax, drawn, "ROC undefined: one class only", title, path, 9)


def finding_roc_curves(
    probs: np.ndarray,
    codes: np.ndarray,
    findings: Sequence[str],
    path: str | Path,
    title: str = "ROC curves per finding",
) -> Path:
    """Multi-label ROC: one curve per finding, on its certain labels only (code 1 positive,
    0 negative; uncertain and unmentioned left out, as in the metrics). A finding without both
    a positive and a negative certain label has no curve; the legend gives each AUC."""
    from multimix.data.findings import NEGATIVE, POSITIVE

    probs = np.asarray(probs, dtype=float)
    codes = np.asarray(codes)
    fig, ax = plt.subplots(figsize=(5.4, 4.8))
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="chance")
    drawn = 0
    for f, name in enumerate(findings):
        if probs.ndim != 2 or f >= probs.shape[1]:
            break
        certain = (codes[:, f] == POSITIVE) | (codes[:, f] == NEGATIVE)
        positive = codes[certain, f] == POSITIVE
        if positive.all() or not positive.any():
            continue
        fpr, tpr = roc_points(probs[certain, f], positive)
        auc = float(np.trapezoid(tpr, fpr))
        ax.plot(fpr, tpr, lw=2, label=_plain(f"{name} (AUC {auc:.3f}, {positive.sum()} pos.)"))
        drawn += 1
    return _finish_roc(fig, ax, drawn, "ROC undefined: no finding has both labels", title, path, 8)


def _finish_roc(fig, ax, drawn: int, empty: str, title: str, path: str | Path, font: int) -> Path:
    """Axes, legend and title of a ROC figure (or a note when no curve could be drawn)."""
    if not drawn:
        _empty_panel(ax, empty)
    else:
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("false positive rate (1 - specificity)")
        ax.set_ylabel("true positive rate (sensitivity)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=font, loc="lower right")
    ax.set_title(_plain(title))
    fig.tight_layout()
    return _save(fig, path)


def roc_points(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold (ties form one step)."""
    scores = np.asarray(scores, dtype=float)
    positive = np.asarray(positive, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    scores, positive = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # end of each tie group
    tps = np.cumsum(positive)[last]
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / max(1, positive.sum())]
    fpr = np.r_[0.0, fps / max(1, (~positive).sum())]
    return fpr, tpr


def reliability_diagram(calibration: dict, ece: float | None, path: str | Path, title: str) -> Path:
    """Accuracy vs confidence per bin (bars) against the diagonal, with bin counts below."""
    counts = np.asarray(calibration.get("count") or [], dtype=float)
    bins = len(counts)
    conf = np.array([np.nan if v is None else v for v in calibration.get("confidence") or []])
    acc = np.array([np.nan if v is None else v for v in calibration.get("accuracy") or []])
    fig, (ax, ax_n) = plt.subplots(
        2, 1, figsize=(5.0, 5.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ece_text = "n/a" if ece is None else f"{ece:.3f}"
    ax.set_title(_plain(f"{title}\nexpected calibration error (ECE) = {ece_text}"))
    if bins == 0 or len(conf) != bins or len(acc) != bins or counts.sum() == 0:
        _empty_panel(ax, "no calibration data")
        _empty_panel(ax_n, "")
        return _save(fig, path)
    edges = np.linspace(0.0, 1.0, bins + 1)
    centers, width = (edges[:-1] + edges[1:]) / 2, 1.0 / bins
    filled = counts > 0
    ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="perfect calibration")
    ax.bar(
        centers[filled],
        acc[filled],
        width=width * 0.9,
        color="#4a90d9",
        edgecolor="#2f6fb2",
        label="accuracy",
    )
    gap_lo, gap_hi = np.minimum(acc, conf)[filled], np.maximum(acc, conf)[filled]
    ax.bar(
        centers[filled],
        gap_hi - gap_lo,
        bottom=gap_lo,
        width=width * 0.9,
        color="#ff3b30",
        alpha=0.25,
        hatch="//",
        edgecolor="#ff3b30",
        label="gap to confidence",
    )
    ax.plot(
        conf[filled], acc[filled], "o", color="black", ms=4, label="(mean confidence, accuracy)"
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax_n.bar(centers, counts, width=width * 0.9, color="0.55")
    ax_n.set_xlabel("confidence (top class probability)")
    ax_n.set_ylabel("images")
    ax_n.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def dice_histogram(dice: np.ndarray, path: str | Path, title: str = "Dice per image") -> Path:
    """Histogram of per-image Dice on [0, 1] with the mean and median marked."""
    dice = np.asarray(dice, dtype=float)
    dice = dice[np.isfinite(dice)]
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    if dice.size == 0:
        _empty_panel(ax, "no images with a mask")
    else:
        ax.hist(dice, bins=np.linspace(0, 1, 21), color="#4a90d9", edgecolor="white")
        mean, median = float(dice.mean()), float(np.median(dice))
        ax.axvline(mean, color="#ff3b30", lw=2, label=f"mean {mean:.3f}")
        ax.axvline(median, color="black", lw=1.5, ls="--", label=f"median {median:.3f}")
        ax.set_xlim(0, 1)
        ax.set_xlabel("Dice")
        ax.set_ylabel("images")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9, loc="best")
    ax.set_title(_plain(f"{title} (n = {dice.size})"))
    fig.tight_layout()
    return _save(fig, path)


def deletion_curves(explanations: dict, path: str | Path, title: str = "Deletion curves") -> Path:
    """Class probability vs share of most-attributed pixels removed, one line per method.

    ``explanations`` is a source's ``explanations`` block; the random-map reference is drawn
    dashed. A faster fall (smaller area under the curve) means a more faithful map.
    """
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    drawn, reference = 0, None
    for method, block in explanations.items():
        if not isinstance(block, dict):
            continue
        fractions = np.asarray(block.get("fractions") or [], dtype=float)
        curve = np.asarray(block.get("deletion_curve") or [], dtype=float)
        if fractions.size < 2 or curve.shape != fractions.shape:
            continue
        auc = block.get("deletion_auc")
        label = method if auc is None else f"{method} (AUC {auc:.3f})"
        ax.plot(fractions, curve, marker="o", ms=3, lw=2, label=_plain(label))
        drawn += 1
        random_curve = np.asarray(block.get("deletion_curve_random") or [], dtype=float)
        if reference is None and random_curve.shape == fractions.shape:
            reference = (fractions, random_curve, block.get("deletion_auc_random"))
    if reference is not None:
        fractions, curve, auc = reference
        label = "random map" if auc is None else f"random map (AUC {auc:.3f})"
        ax.plot(fractions, curve, color="0.45", ls="--", lw=1.5, label=label)
    if drawn:
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("share of pixels removed (most attributed first)")
        ax.set_ylabel("probability of the predicted class")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    else:
        _empty_panel(ax, "no deletion curves")
    ax.set_title(_plain(title))
    fig.tight_layout()
    return _save(fig, path)
