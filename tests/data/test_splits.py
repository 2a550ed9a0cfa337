from __future__ import annotations

from collections import Counter
from pathlib import Path

from multimix.data.sources import Record
from multimix.data.splits import choose_subset, split_by_patient


def _records(n: int, per_patient: int = 3) -> list[Record]:
    return [Record("s", f"{i:04d}.png", Path(f"{i}.png"), f"p{i // per_patient}") for i in range(n)]


def test_no_patient_in_two_parts_and_fractions_are_close():
    recs = _records(600)
    parts = split_by_patient(recs, 0.1, 0.2, seed=3)
    patient = {r.name: r.patient for r in recs}
    owners = {}
    for part, names in parts.items():
        for n in names:
            assert owners.setdefault(patient[n], part) == part
    assert sorted(n for names in parts.values() for n in names) == sorted(r.name for r in recs)
    assert abs(len(parts["test"]) - 120) <= 3 and abs(len(parts["val"]) - 60) <= 3


def test_split_is_deterministic_and_seeded():
    recs = _records(90)
    assert split_by_patient(recs, 0.1, 0.2, 0) == split_by_patient(
        list(reversed(recs)), 0.1, 0.2, 0
    )
    assert split_by_patient(recs, 0.1, 0.2, 0) != split_by_patient(recs, 0.1, 0.2, 1)


def test_choose_subset_is_stratified_and_seeded():
    names = [f"n{i}" for i in range(100)]
    cls = {n: ("a" if i < 80 else "b") for i, n in enumerate(names)}
    picked = choose_subset(names, 10, seed=0, stratum=cls.get)
    assert Counter(cls[n] for n in picked) == {"a": 8, "b": 2}
    assert picked == choose_subset(names, 10, seed=0, stratum=cls.get)
    assert picked != choose_subset(names, 10, seed=1, stratum=cls.get)
    assert choose_subset(names, None, 0) == sorted(names)
    # A rare class still appears when the count allows it.
    rare = {n: ("r" if n == "n0" else "c") for n in names}
    assert "n0" in choose_subset(names, 2, seed=0, stratum=rare.get)
