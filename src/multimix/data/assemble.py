"""From the user's folders to a bank, the split, and the rows each stream draws from.

Roles: ``class`` sources give image labels, ``seg`` sources give masks, ``unlabeled`` sources
give images only, ``pretrain`` sources give (pseudo-)masks for a pre-training phase. One folder
may have several roles. Every source is split by patient into
train/val/test (unlabeled-only sources are all train); only train and val are ever loaded for
training, and the split is saved so that evaluation can exclude the training images.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from multimix.core.batch import LABELED, MASKED, PRETRAIN, UNLABELED, UNMASKED
from multimix.core.errors import ConfigError, DataError
from multimix.data.bad_inputs import BadInputs
from multimix.data.bank import Bank, load_bank
from multimix.data.labels import LabelSpace
from multimix.data.sources import Record, Source, load_source
from multimix.data.splits import choose_subset, split_by_patient

ROLES = ("class", "seg", "unlabeled", "pretrain")
TRAIN_ONLY = {"unlabeled", "pretrain"}  # roles whose sources are never split
CLASS_DOMAIN = {"class", "unlabeled"}  # roles whose images the class task is about


@dataclass
class TrainingData:
    bank: Bank
    rows: dict[str, torch.Tensor]  # stream name (and "pretrain") -> bank rows
    val: dict[str, torch.Tensor]  # source name -> bank rows of its val part
    split: dict
    sources: dict[str, Source]

    def class_domain(self) -> torch.Tensor:
        """Bool (N,): the bank row's source was given for the class task (``--class-data`` or
        ``--unlabeled-data``). A source given only for its masks may hold any mix of classes
        (the adult covid set is almost all abnormal), so a method can keep its class
        pseudo-labels off those images."""
        roles = {name: set(info["roles"]) for name, info in self.split["sources"].items()}
        return torch.tensor(
            [bool(roles.get(r.source, set()) & CLASS_DOMAIN) for r in self.bank.records],
            dtype=torch.bool,
        )


def load_sources(
    folders: dict[str, list[str]], bad: BadInputs | None = None
) -> tuple[dict[str, Source], dict[str, list[str]]]:
    """Load each distinct folder once; name clashes between different folders are an error.

    Under ``bad``'s skip policy a folder with no usable image is left out (and recorded).
    """
    sources: dict[str, Source] = {}
    roles: dict[str, list[str]] = {}
    loaded: dict[Path, Source] = {}  # a folder given for two roles is read (and reported) once
    for role in ROLES:
        for folder in folders.get(role, []):
            key = Path(folder).resolve()
            if key not in loaded:
                loaded[key] = load_source(folder, bad=bad)
            source = loaded[key]
            if not source.records:
                continue
            known = sources.get(source.name)
            if known and known.root.resolve() != source.root.resolve():
                raise ConfigError(
                    f"two data folders share the name {source.name!r}: {known.root} and "
                    f"{source.root}; rename one"
                )
            sources[source.name] = source
            roles.setdefault(source.name, [])
            if role not in roles[source.name]:
                roles[source.name].append(role)
    return sources, roles


def used_record(record: Record, roles: list[str]) -> Record:
    """The record as a run uses it: labels only from class sources, masks only from seg and
    pretrain sources (so nothing unused is decoded, or can stop a run)."""
    if "class" not in roles and record.label is not None:
        record = dataclasses.replace(record, label=None)
    if not {"seg", PRETRAIN} & set(roles) and record.masks:
        record = dataclasses.replace(record, masks={})
    return record


def check_sources(
    sources: dict[str, Source],
    roles: dict[str, list[str]],
    labels: LabelSpace,
    size: int,
    structures: tuple[str, ...],
    bad: BadInputs | None = None,
) -> tuple[dict[str, Source], Bank]:
    """Decode every image, mask and label a run uses, in every part (test included), before
    the split is made and before the first step: a bad file stops the run now, not hours in.

    Returns the sources without the records left out under ``bad``'s skip policy (so that the
    split and the labeled subsets are chosen among usable images only) and the bank of all of
    them, from which :func:`assemble` takes the training rows without decoding again.
    """
    records = [used_record(r, roles[n]) for n, s in sources.items() for r in s.records]
    bank = load_bank(records, size, structures, labels, "checking and loading images", bad)
    kept = {(r.source, r.name) for r in bank.records}
    out = {}
    for name, source in sources.items():
        usable = [r for r in source.records if (name, r.name) in kept]
        if usable:
            out[name] = dataclasses.replace(source, records=usable)
    return out, bank


def make_split(
    sources: dict[str, Source],
    roles: dict[str, list[str]],
    labels: LabelSpace,
    labeled_class: int | None,
    labeled_seg: int | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict:
    """Split every source by patient, then choose the labeled subsets from the train parts."""
    split: dict = {"seed": seed, "sources": {}, "labeled_class": {}, "labeled_seg": {}}
    class_pool: list[tuple[str, str]] = []
    seg_pool: list[tuple[str, str]] = []
    for name, source in sources.items():
        if set(roles[name]) <= TRAIN_ONLY:
            parts = {"train": sorted(r.name for r in source.records), "val": [], "test": []}
        else:
            parts = split_by_patient(source.records, val_fraction, test_fraction, seed)
        split["sources"][name] = {"root": str(source.root.resolve()), "roles": roles[name], **parts}
        by_name = source.by_name()
        for n in parts["train"]:
            rec = by_name[n]
            if "class" in roles[name] and rec.label is not None:
                class_pool.append((name, n))
            if "seg" in roles[name] and rec.masks:
                seg_pool.append((name, n))
    label_of = {
        (s, n): labels.stratum(sources[s].by_name()[n].label, sources[s].by_name()[n].image)
        for s, n in class_pool
    }
    if any("class" in r for r in roles.values()) and not class_pool:
        raise ConfigError("the --class-data folders have no labeled images in their training part")
    if any("seg" in r for r in roles.values()) and not seg_pool:
        raise ConfigError("the --seg-data folders have no masks in their training part")
    chosen_cls = _choose(class_pool, labeled_class, seed, label_of.get)
    chosen_seg = _choose(seg_pool, labeled_seg, seed, None)
    for key, chosen in (("labeled_class", chosen_cls), ("labeled_seg", chosen_seg)):
        for s, n in chosen:
            split[key].setdefault(s, []).append(n)
    return split


def _choose(pool, count, seed, stratum):
    keys = [f"{s}\0{n}" for s, n in pool]
    lookup = dict(zip(keys, pool, strict=True))
    picked = choose_subset(keys, count, seed, (lambda k: stratum(lookup[k])) if stratum else None)
    return [lookup[k] for k in picked]


def save_split(path: Path, split: dict) -> None:
    from multimix.core.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(split, indent=1))


def load_split(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(path, f"unreadable split file ({exc})") from None


def assemble(
    sources: dict[str, Source],
    split: dict,
    labels: LabelSpace,
    size: int,
    structures: tuple[str, ...],
    checked: Bank | None = None,
) -> TrainingData:
    """Load train+val images of every source into one bank and index the streams.

    With ``checked`` (the bank of :func:`check_sources`), the rows are taken from it instead.
    """
    records: list[Record] = []
    for name, info in split["sources"].items():
        if name not in sources:
            raise ConfigError(f"the saved split names source {name!r}, which was not given")
        by_name = sources[name].by_name()
        for part in ("train", "val"):
            for n in info[part]:
                if n not in by_name:
                    raise DataError(
                        sources[name].root / n,
                        "image from the saved split is missing (or was left out as a bad input)",
                    )
                records.append(used_record(by_name[n], info["roles"]))
    if checked is None:
        bank = load_bank(records, size, structures, labels, "loading training images")
    else:
        where = checked.index()
        bank = checked.subset(torch.tensor([where[(r.source, r.name)] for r in records]))
    index = bank.index()
    labeled_cls = {(s, n) for s, names in split["labeled_class"].items() for n in names}
    labeled_seg = {(s, n) for s, names in split["labeled_seg"].items() for n in names}
    train = [(s, n) for s, info in split["sources"].items() for n in info["train"]]

    def rows(keys) -> torch.Tensor:
        return torch.tensor(sorted(index[k] for k in keys), dtype=torch.long)

    streams = {
        MASKED: rows(labeled_seg),
        UNMASKED: rows(k for k in train if k not in labeled_seg),
        LABELED: rows(labeled_cls),
        UNLABELED: rows(k for k in train if k not in labeled_cls),
        PRETRAIN: rows(
            (s, n)
            for s, info in split["sources"].items()
            if PRETRAIN in info["roles"]
            for n in info["train"]
            if bank.known[index[(s, n)]].any()
        ),
    }
    val = {
        s: rows((s, n) for n in info["val"]) for s, info in split["sources"].items() if info["val"]
    }
    return TrainingData(bank, streams, val, split, sources)
