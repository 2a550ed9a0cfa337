"""Patient-grouped, seeded splits and labeled subsets, saved with the run.

A split is a plain JSON-able dict so that ``evaluate`` can read it back and never score an image
that the model was trained on.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Callable, Iterable

from multimix.data.sources import Record

PARTS = ("train", "val", "test")


def _key(seed: int, text: str) -> str:
    return hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()


def split_by_patient(
    records: Iterable[Record], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[str]]:
    """Assign whole patients to test, then val, then train, in a seeded hash order.

    Hashing patient ids (rather than shuffling a list) keeps a patient's part stable when other
    images are added to the folder.
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for r in records:
        groups[r.patient].append(r.name)
    total = sum(len(v) for v in groups.values())
    targets = {"test": test_fraction * total, "val": val_fraction * total}
    parts: dict[str, list[str]] = {p: [] for p in PARTS}
    for patient in sorted(groups, key=lambda p: _key(seed, p)):
        names = groups[patient]
        part = next(
            (p for p in ("test", "val") if len(parts[p]) + len(names) / 2 <= targets[p]), "train"
        )
        parts[part].extend(names)
    return {p: sorted(v) for p, v in parts.items()}


def choose_subset(
    names: list[str], count: int | None, seed: int, stratum: Callable[[str], object] | None = None
) -> list[str]:
    """``count`` names (all when None), stratified by ``stratum`` in proportion, seeded."""
    if count is None or count >= len(names):
        return sorted(names)
    rng = random.Random(seed)
    strata: dict[object, list[str]] = defaultdict(list)
    for n in sorted(names):
        strata[stratum(n) if stratum else None].append(n)
    for members in strata.values():
        rng.shuffle(members)
    # Largest-remainder allocation keeps every class represented when count allows.
    quotas = {s: count * len(m) / len(names) for s, m in strata.items()}
    take = {s: int(q) for s, q in quotas.items()}
    order = sorted(strata, key=lambda s: (take[s] > 0, -(quotas[s] - take[s]), str(s)))
    for s in order[: count - sum(take.values())]:
        take[s] += 1
    chosen = [n for s, members in strata.items() for n in members[: take[s]]]
    return sorted(chosen)
