from __future__ import annotations

import pytest
import torch

from multimix.data.streams import SourcePool

# 12 rows of a large source "a" and 3 of a small source "b", interleaved in the bank.
ROWS = torch.arange(100, 115)
SOURCES = ["a"] * 6 + ["b"] * 3 + ["a"] * 6


def _source(row: int) -> str:
    return SOURCES[row - 100]


def test_every_source_gets_an_equal_share_of_each_batch_and_alternates():
    pool = SourcePool("u", ROWS, SOURCES, 4, seed=0)
    for _ in range(5):
        batch = pool.next().tolist()
        assert [_source(r) for r in batch] == ["a", "b", "a", "b"]


def test_each_source_walks_all_its_images_before_repeating_one():
    pool = SourcePool("u", ROWS, SOURCES, 6, seed=0)
    first = [pool.next().tolist() for _ in range(4)]  # 12 of "a" (one epoch), 12 of "b" (four)
    small = [r for b in first for r in b if _source(r) == "b"]
    large = [r for b in first for r in b if _source(r) == "a"]
    assert sorted(large) == [r for r in ROWS.tolist() if _source(r) == "a"]
    for k in range(0, 12, 3):
        assert sorted(small[k : k + 3]) == [106, 107, 108]


def test_an_odd_batch_gives_the_extra_row_to_the_sources_in_turn():
    pool = SourcePool("u", ROWS, SOURCES, 3, seed=0)
    counts = [sum(_source(r) == "b" for r in pool.next().tolist()) for _ in range(4)]
    assert counts == [1, 2, 1, 2]
    single = SourcePool("u", ROWS, SOURCES, 1, seed=0)  # fewer places than sources
    assert [_source(int(single.next())) for _ in range(4)] == ["a", "b", "a", "b"]


def test_resumes_exactly_and_shards_between_ranks():
    a = SourcePool("u", ROWS, SOURCES, 5, seed=3)
    a.next()
    b = SourcePool("u", ROWS, SOURCES, 5, seed=3)
    b.load_state_dict(a.state_dict())
    for _ in range(3):
        assert torch.equal(a.next(), b.next())
    r0 = SourcePool("u", ROWS, SOURCES, 4, seed=3, rank=0, world=2).next().tolist()
    r1 = SourcePool("u", ROWS, SOURCES, 4, seed=3, rank=1, world=2).next().tolist()
    assert not set(r0) & set(r1)


def test_one_source_name_per_row():
    with pytest.raises(ValueError, match="source names"):
        SourcePool("u", ROWS, SOURCES[:-1], 4, seed=0)
