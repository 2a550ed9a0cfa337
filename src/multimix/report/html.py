"""Static HTML evaluation report.

``write_report`` writes ``out_dir/report.html`` plus PNG figures in ``out_dir/figures/``,
referenced by relative paths, so the page opens straight from disk without a server.
All CSS is inline; there is no JavaScript and nothing is fetched from the network.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from multimix.core.atomic import atomic_write_text
from multimix.report import figures

__all__ = ["Gallery", "SourceScores", "write_report"]

FIGURES_DIR = "figures"
NA = "n/a"


@dataclass
class Gallery:
    """Examples of one source for a mask gallery; a source may have several (by heading)."""

    source: str
    images: np.ndarray  # uint8 (n, S, S) radiographs
    pred_masks: np.ndarray | None  # bool (n, S, S) predicted lung mask (first structure)
    true_masks: np.ndarray | None  # bool (n, S, S) or None when the source has no masks
    titles: list[str]  # one caption per image
    heading: str = "Examples"  # section heading, e.g. "Worst segmentations", "False positives"
    heatmaps: np.ndarray | None = None  # float (n, S, S) in [0, 1]: drawn next to each image
    heatmap_name: str = "explanation"  # what the heatmaps are, e.g. "gradcam"
    caption: str | None = None  # shown under the figure; default: what the outlines mean
    # The region the run's method judged each image on (kacl: its CAM region), outlined on
    # the explanation, and the values it read there (a table under the figure).
    regions: np.ndarray | None = None  # bool (n, S, S)
    region_values: list[dict[str, float]] | None = None
    region_caption: str = ""


@dataclass
class SourceScores:
    """Per-image results of one source, for figures that need more than metrics.json."""

    source: str
    probs: np.ndarray | None = None  # float (n, C) class probabilities of the labeled images
    labels: np.ndarray | None = None  # int (n,) their true class indices
    dice: np.ndarray | None = None  # float (m,) lung Dice of the images that have a lung mask
    codes: np.ndarray | None = None  # int (n, F) finding codes (multi-label; probs are sigmoids)


_CSS = """
:root { --fg: #1d232b; --muted: #5f6b7a; --line: #dde2e8; --head: #f3f5f8; --accent: #2f6fb2; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 1.7em; margin: 0 0 4px; }
h2 { font-size: 1.3em; margin: 40px 0 10px; padding-bottom: 4px;
  border-bottom: 2px solid var(--line); }
h3 { font-size: 1.05em; margin: 22px 0 8px; color: var(--muted); }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
.meta { color: var(--muted); font-size: 0.92em; margin: 0 0 16px; }
.meta span { margin-right: 18px; }
.notes { background: #fff8e6; border-left: 4px solid #f0b429; padding: 8px 16px 8px 32px;
  margin: 12px 0; }
.notes li { margin: 2px 0; }
nav.toc { font-size: 0.92em; margin: 8px 0 0; }
nav.toc a { margin-right: 14px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 0.92em; }
th, td { border: 1px solid var(--line); padding: 5px 10px; }
th { background: var(--head); text-align: left; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums;
  font-family: ui-monospace, "SF Mono", Menlo, Consolas, monospace; }
td.na { color: #9aa3ad; }
tbody tr:nth-child(even) td { background: #fafbfc; }
.scroll { overflow-x: auto; }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 0.88em; }
.figrow { display: flex; flex-wrap: wrap; gap: 4px 22px; align-items: flex-start; }
.figrow figure { flex: 0 1 auto; max-width: 100%; }
.empty { color: var(--muted); font-style: italic; }
footer { margin-top: 48px; color: var(--muted); font-size: 0.85em; }
"""


# --------------------------------------------------------------------------- helpers


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _number(value: Any) -> float | None:
    """A finite float from ``value`` or None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def fmt(value: Any, digits: int = 3) -> str:
    """Format a metric: 3 decimals, integers as integers, ``n/a`` for missing values."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    num = _number(value)
    if num is None:
        if isinstance(value, str) and value.strip():
            return value
        return NA
    return f"{num:.{digits}f}"


def fmt_int(value: Any) -> str:
    num = _number(value)
    if num is None:
        return NA
    return str(int(num)) if num.is_integer() else fmt(num)


def _cell(value: Any, *, integer: bool = False) -> str:
    text = fmt_int(value) if integer else fmt(value)
    cls = "num na" if text == NA else "num"
    return f'<td class="{cls}">{_esc(text)}</td>'


_COUNTS = ("n", "n_images", "n_boxes", "support")  # shown as integers


def _cells(block: Mapping[str, Any], *keys: str) -> str:
    """One numeric cell per key of ``block`` (counts as integers, missing values as n/a)."""
    return "".join(_cell(block.get(k), integer=k in _COUNTS) for k in keys)


def _dict(value: Any) -> dict:
    return value if isinstance(value, Mapping) else {}


def _table(header: Sequence[str], rows: Iterable[str]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "\n".join(rows)
    return (
        f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n{body}\n</tbody>\n</table></div>"
    )


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "source"
    slug, k = base, 2
    while slug in used:
        slug, k = f"{base}-{k}", k + 1
    used.add(slug)
    return slug


def _figure(rel: str, alt: str, caption: str | None = None) -> str:
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{_esc(rel)}" alt="{_esc(alt)}" loading="lazy">{cap}</figure>'


# --------------------------------------------------------------------------- sections


def _summary_table(sources: Sequence[str], blocks: Mapping[str, dict], anchors: dict) -> str:
    header = ["source", "images", "part", "accuracy", "AUC", "F1 macro", "Dice", "IoU", "HD95"]
    rows = []
    for name in sources:
        block = blocks.get(name, {})
        cls = _dict(block.get("classification"))
        ml = _dict(block.get("multilabel"))
        if ml:  # multi-label: mean AUC and macro F1 over findings, no accuracy
            cls = {"auc": ml.get("mean_auc"), "f1_macro": ml.get("f1_macro")}
        seg = _dict(block.get("segmentation"))
        part = block.get("part")
        rows.append(
            "<tr>"
            f'<td><a href="#{anchors[name]}">{_esc(name)}</a></td>'
            + _cell(block.get("n_images"), integer=True)
            + f"<td>{_esc(part) if part not in (None, '') else NA}</td>"
            + _cells(cls, "accuracy", "auc", "f1_macro")
            + _cells(seg, "dice", "iou", "hd95")
            + "</tr>"
        )
    return _table(header, rows)


def _per_class_table(cls: Mapping[str, Any], classes: Sequence[str]) -> str:
    per_class = _dict(cls.get("per_class"))
    names = [c for c in classes if c in per_class]
    names += [c for c in per_class if c not in names]
    if not names:
        return ""
    rows = []
    for name in names:
        row = _dict(per_class.get(name))
        rows.append(
            f"<tr><td>{_esc(name)}</td>"
            + _cells(row, "precision", "recall", "f1", "auc", "support")
            + "</tr>"
        )
    return _table(["class", "precision", "recall", "F1", "AUC", "support"], rows)


def _classification_overview(cls: Mapping[str, Any]) -> str:
    row = "<tr>" + _cells(cls, "n", "accuracy", "auc", "f1_macro", "ece") + "</tr>"
    return _table(["n", "accuracy", "AUC", "F1 macro", "ECE"], [row])


def _segmentation_table(seg: Mapping[str, Any]) -> str:
    rows = []
    structures = [(k, v) for k, v in seg.items() if isinstance(v, Mapping)]
    for name, block in structures:
        rows.append(
            f"<tr><td>{_esc(name)}</td>" + _cells(block, "n", "dice", "iou", "hd95") + "</tr>"
        )
    if len(structures) != 1 or not rows:
        rows.append(
            "<tr><td><strong>mean</strong></td>" + _cells(seg, "n", "dice", "iou", "hd95") + "</tr>"
        )
    return _table(["structure", "n", "Dice", "IoU", "HD95"], rows)


def _multilabel_tables(ml: Mapping[str, Any], findings: Sequence[str]) -> list[str]:
    """Overview (images, mean AUC, macro F1) and one row per finding."""
    overview = "<tr>" + _cells(ml, "n", "mean_auc", "f1_macro") + "</tr>"
    per = _dict(ml.get("per_finding"))
    names = [f for f in findings if f in per] + [f for f in per if f not in findings]
    rows = []
    for name in names:
        row = _dict(per.get(name))
        rows.append(
            f"<tr><td>{_esc(name)}</td>"
            + _cells(row, "auc", "threshold", "precision", "recall", "f1", "support", "n")
            + "</tr>"
        )
    header = ["finding", "AUC", "threshold", "precision", "recall", "F1", "positives", "scored"]
    out = [_table(["images", "mean AUC", "F1 macro"], [overview])]
    return out + ([_table(header, rows)] if rows else [])


_MULTILABEL_NOTE = (
    "Each finding is scored on its certain labels only (uncertain and unmentioned ones are left "
    "out: 'scored'); precision, recall and F1 at the finding's threshold, chosen for the best "
    "F1 on the run's validation part (RUN/thresholds.json)."
)


def _localization_tables(loc: Mapping[str, Any]) -> list[str]:
    """Boxes, map source, mean IoU and zone accuracy; then the hit rate per IoU threshold."""
    cam = {"localization_head": "localization head", "classifier_cam": "classifier CAM"}
    source = cam.get(str(loc.get("cam")), loc.get("cam") or NA)
    overview = (
        "<tr>"
        + _cell(loc.get("n_boxes"), integer=True)
        + f"<td>{_esc(source)}</td>"
        + _cells(loc, "mean_iou", "zone_accuracy")
        + "</tr>"
    )
    hits = _dict(loc.get("box_iou_hit"))
    out = [_table(["true boxes", "maps from", "mean IoU", "zone accuracy"], [overview])]
    if hits:
        row = "<tr><td>boxes found</td>" + "".join(_cell(v) for v in hits.values()) + "</tr>"
        out.append(_table(["IoU at least", *(str(t) for t in hits)], [row]))
    return out


_LOCALIZATION_NOTE = (
    "A true box is found at IoU T when a box around a region of the finding's map (scaled to "
    "[0, 1], above 0.5) overlaps it with IoU at least T. Zone accuracy: predicted against true "
    "lung zones (left/right x upper/middle/lower) per image, finding and zone."
)


def _explanation_table(explanations: Mapping[str, Any]) -> str:
    rows = []
    for method, block in explanations.items():
        block = _dict(block)
        rows.append(
            f"<tr><td>{_esc(method)}</td>"
            + _cells(
                block, "lung_share", "lung_share_random", "deletion_auc", "deletion_auc_random", "n"
            )
            + "</tr>"
        )
    header = [
        "method",
        "lung share",
        "random-map lung share",
        "deletion AUC",
        "random-map deletion AUC",
        "images",
    ]
    return _table(header, rows)


_EXPLANATION_NOTE = (
    "Lung share: the share of the attribution mass inside the reference lung mask (higher is "
    "better; a random map gets about the lungs' share of the image). Deletion AUC: the mean "
    "probability of the predicted class while the most attributed pixels are replaced by a "
    "blurred copy, from none to all (lower is better: the map found what the class depends on)."
)


def _figrow(items: list[str]) -> list[str]:
    return [f'<div class="figrow">{"".join(items)}</div>'] if items else []


def _has_rows(values: np.ndarray | None) -> bool:
    return values is not None and len(values) > 0


def _gallery_html(gallery: Gallery, fname: str, name: str, fig_dir: Path) -> list[str]:
    heading = f"<h3>{_esc(gallery.heading)}</h3>"
    if not len(gallery.images):
        return [heading, '<p class="empty">None in this source.</p>']
    figures.mask_gallery(gallery, fig_dir / fname)
    caption = gallery.caption
    if caption is None:
        caption = "Red: predicted lung mask."
        if gallery.true_masks is not None:
            caption += " Green: reference mask."
        if gallery.heatmaps is not None:
            caption += (
                f" Right of each image: its {gallery.heatmap_name} map "
                "(bright: strong attribution)."
            )
    alt = f"{gallery.heading.lower()} for {name}"
    return [heading, _figure(f"{FIGURES_DIR}/{fname}", alt, caption), *_region_table(gallery)]


def _region_table(gallery: Gallery) -> list[str]:
    """The values read from each image's region, one column per image in gallery order."""
    values = gallery.region_values
    if not values:
        return []
    names = list(values[0])
    rows = [
        f"<tr><td>{_esc(n)}</td>" + "".join(_value_cell(v.get(n)) for v in values) + "</tr>"
        for n in names
    ]
    header = ["region value", *(f"image {k + 1}" for k in range(len(values)))]
    note = f"<p>{_esc(gallery.region_caption)}</p>" if gallery.region_caption else ""
    return [note, _table(header, rows)]


def _value_cell(value: Any) -> str:
    """A radiomic value: they span 1e-3 .. 1e6, so four significant digits, not decimals."""
    num = _number(value)
    return f'<td class="num">{_esc(NA if num is None else f"{num:.4g}")}</td>'


def _source_section(
    name: str,
    block: Mapping[str, Any],
    galleries: Sequence[Gallery],
    scores: SourceScores | None,
    classes: Sequence[str],
    anchor: str,
    fig_dir: Path,
) -> str:
    parts = [f'<section id="{anchor}">', f"<h2>{_esc(name)}</h2>"]
    info = []
    if block.get("n_images") is not None:
        info.append(f"<span>images: {_esc(fmt_int(block.get('n_images')))}</span>")
    if block.get("part") not in (None, ""):
        info.append(f"<span>part: {_esc(block.get('part'))}</span>")
    if info:
        parts.append(f'<p class="meta">{"".join(info)}</p>')

    cls = _dict(block.get("classification"))
    ml = _dict(block.get("multilabel"))
    loc = _dict(block.get("localization"))
    seg = _dict(block.get("segmentation"))
    explanations = _dict(block.get("explanations"))

    def figure(fname: str, draw, alt: str, caption: str | None = None) -> str:
        draw(fig_dir / fname)
        return _figure(f"{FIGURES_DIR}/{fname}", alt, caption)

    if cls:
        parts.append("<h3>Classification</h3>")
        parts.append(_classification_overview(cls))
        per_class = _per_class_table(cls, classes)
        if per_class:
            parts.append(per_class)
        row = []
        confusion = cls.get("confusion")
        if confusion is not None and np.asarray(confusion, dtype=float).size:
            row.append(
                figure(
                    f"confusion_{anchor}.png",
                    lambda p: figures.confusion_matrix(
                        confusion, list(classes), p, title=f"{name}: confusion matrix"
                    ),
                    f"confusion matrix for {name}",
                    "Rows: true class; columns: predicted class.",
                )
            )
        if scores is not None and _has_rows(scores.probs) and _has_rows(scores.labels):
            roc_caption = (
                f"Positive class: {classes[1]}."
                if len(classes) == 2
                else "One curve per class (that class against the others)."
            )
            row.append(
                figure(
                    f"roc_{anchor}.png",
                    lambda p: figures.roc_curves(
                        scores.probs, scores.labels, list(classes), p, title=f"{name}: ROC curve"
                    ),
                    f"ROC curve for {name}",
                    roc_caption,
                )
            )
        calibration = _dict(cls.get("calibration"))
        if calibration.get("count"):
            row.append(
                figure(
                    f"reliability_{anchor}.png",
                    lambda p: figures.reliability_diagram(
                        calibration, _number(cls.get("ece")), p, f"{name}: reliability"
                    ),
                    f"reliability diagram for {name}",
                    "Accuracy of the predicted class per confidence bin; on the diagonal, the "
                    "probabilities mean what they say.",
                )
            )
        parts += _figrow(row)

    if ml:
        parts.append("<h3>Findings (multi-label)</h3>")
        parts.append(f'<p class="meta">{_esc(_MULTILABEL_NOTE)}</p>')
        parts += _multilabel_tables(ml, classes)
        if scores is not None and _has_rows(scores.probs) and _has_rows(scores.codes):
            parts.append(
                figure(
                    f"roc_{anchor}.png",
                    lambda p: figures.finding_roc_curves(
                        scores.probs, scores.codes, list(classes), p, f"{name}: ROC per finding"
                    ),
                    f"ROC curves per finding for {name}",
                    "One curve per finding (that finding present against absent).",
                )
            )

    if loc:
        parts.append("<h3>Localization</h3>")
        parts.append(f'<p class="meta">{_esc(_LOCALIZATION_NOTE)}</p>')
        parts += _localization_tables(loc)

    if seg:
        parts.append("<h3>Segmentation</h3>")
        parts.append(_segmentation_table(seg))
        if scores is not None and _has_rows(scores.dice):
            parts.append(
                figure(
                    f"dice_{anchor}.png",
                    lambda p: figures.dice_histogram(
                        scores.dice, p, f"{name}: lung Dice per image"
                    ),
                    f"Dice distribution for {name}",
                )
            )

    used: set[str] = set()
    for gallery in galleries:
        key = _slug(gallery.heading, used)
        fname = f"gallery_{anchor}.png" if key == "examples" else f"gallery_{anchor}_{key}.png"
        if len(gallery.images) or key != "examples":
            parts += _gallery_html(gallery, fname, name, fig_dir)

    if explanations:
        parts.append("<h3>Explanations</h3>")
        parts.append(f'<p class="meta">{_esc(_EXPLANATION_NOTE)}</p>')
        parts.append(_explanation_table(explanations))
        parts.append(
            figure(
                f"deletion_{anchor}.png",
                lambda p: figures.deletion_curves(explanations, p, f"{name}: deletion curves"),
                f"deletion curves for {name}",
                "Dashed: the same for a random map.",
            )
        )

    if not cls and not ml and not loc and not seg and not galleries and not explanations:
        parts.append('<p class="empty">No metrics for this source.</p>')
    parts.append("</section>")
    return "\n".join(parts)


# --------------------------------------------------------------------------- public API


def write_report(
    out_dir: str | Path,
    title: str,
    metrics: dict,
    train_log: list[dict[str, str]],
    val_log: list[dict[str, str]],
    classes: list[str],
    galleries: list[Gallery],
    notes: list[str] | None = None,
    scores: list[SourceScores] | None = None,
) -> Path:
    """Write ``out_dir/report.html`` and its figures under ``out_dir/figures/``.

    Per source: metric tables, confusion matrix, reliability diagram (from the metrics' bins),
    ROC curve and Dice histogram (from ``scores``; for a ``multilabel`` block the per-finding
    table and ROC curves, and the ``localization`` tables), the galleries in the order given,
    and the explanation table and deletion curves when the block has ``explanations``.
    Missing metric blocks or values render as ``n/a``. Returns the path of the HTML page.
    """
    out_dir = Path(out_dir)
    fig_dir = out_dir / FIGURES_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    metrics = _dict(metrics)
    classes = [str(c) for c in (classes or [])]
    train_log = list(train_log or [])
    val_log = list(val_log or [])

    blocks = {str(k): _dict(v) for k, v in _dict(metrics.get("sources")).items()}
    by_source: dict[str, list[Gallery]] = {}
    for gallery in galleries or []:
        by_source.setdefault(str(gallery.source), []).append(gallery)
    scores_of = {str(sc.source): sc for sc in scores or []}
    sources = list(blocks) + [s for s in by_source if s not in blocks]
    used: set[str] = {"top", "summary", "training"}
    anchors = {name: _slug(name, used) for name in sources}

    body: list[str] = [f"<h1>{_esc(title)}</h1>"]
    meta = [
        f"<span>{_esc(key)}: {_esc(fmt(value))}</span>"
        for key, value in metrics.items()
        if key != "sources" and not isinstance(value, (Mapping, list, tuple))
    ]
    meta.append(f"<span>generated: {datetime.now().strftime('%Y-%m-%d %H:%M')}</span>")
    body.append(f'<p class="meta">{"".join(meta)}</p>')
    if notes:
        items = "".join(f"<li>{_esc(n)}</li>" for n in notes)
        body.append(f'<ul class="notes">{items}</ul>')
    if sources:
        links = "".join(f'<a href="#{anchors[s]}">{_esc(s)}</a>' for s in sources)
        body.append(
            f'<nav class="toc"><a href="#summary">summary</a><a href="#training">training</a>'
            f"{links}</nav>"
        )

    body.append('<h2 id="summary">Summary</h2>')
    if sources:
        body.append(_summary_table(sources, blocks, anchors))
    else:
        body.append('<p class="empty">No evaluated sources.</p>')

    body.append('<h2 id="training">Training</h2>')
    if train_log or val_log:
        figures.training_curves(train_log, val_log, fig_dir / "training_curves.png")
        body.append(
            _figure(
                f"{FIGURES_DIR}/training_curves.png",
                "training curves",
                "Left: training losses (faint: raw, solid: running mean). "
                "Right: validation metrics.",
            )
        )
    else:
        body.append('<p class="empty">No training log.</p>')

    for name in sources:
        body.append(
            _source_section(
                name,
                blocks.get(name, {}),
                by_source.get(name, []),
                scores_of.get(name),
                classes,
                anchors[name],
                fig_dir,
            )
        )

    body.append("<footer>multimix evaluation report</footer>")
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        '<body id="top">\n<main>\n' + "\n".join(body) + "\n</main>\n</body>\n</html>\n"
    )
    path = out_dir / "report.html"
    atomic_write_text(path, page)
    return path
