from __future__ import annotations

import torch

from multimix.core.batch import LABELED, MASKED, UNLABELED, UNMASKED, Stream
from multimix.data.assemble import assemble, load_sources, make_split
from multimix.data.labels import LabelSpace
from multimix.data.streams import Pool, Streams

LABELS = LabelSpace(("normal", "pneumonia"))


def _data(phantom_dirs, n_cls=10, n_seg=4):
    sources, roles = load_sources(
        {"class": [str(phantom_dirs["cls"])], "seg": [str(phantom_dirs["seg"])]}
    )
    split = make_split(sources, roles, LABELS, n_cls, n_seg, 0.1, 0.2, seed=0)
    return assemble(sources, split, LABELS, 32, ("lungs",))


def test_streams_hold_the_right_images(phantom_dirs):
    data = _data(phantom_dirs)
    bank, rows, split = data.bank, data.rows, data.split
    assert len(rows[LABELED]) == 10 and len(rows[MASKED]) == 4
    assert bank.labeled[rows[LABELED]].all()
    assert bank.known[rows[MASKED]].all()
    # Masks exist only where kept; class labels only from the class source.
    assert set(rows[MASKED].tolist()).isdisjoint(rows[UNMASKED].tolist())
    assert set(rows[LABELED].tolist()).isdisjoint(rows[UNLABELED].tolist())
    seg_source_rows = [i for i, r in enumerate(bank.records) if r.source == "ph_seg"]
    assert (bank.targets[seg_source_rows] == -1).all() and not bank.labeled[seg_source_rows].any()
    # No test image is ever loaded for training.
    test = {(s, n) for s, info in split["sources"].items() for n in info["test"]}
    assert test and test.isdisjoint((r.source, r.name) for r in bank.records)


def test_pool_is_resumable_and_shards(phantom_dirs):
    rows = torch.arange(10)
    a = Pool("x", rows, 4, seed=1)
    drawn = [a.next() for _ in range(3)]
    assert sorted(torch.cat(drawn[:2]).tolist() + drawn[2][:2].tolist()) == list(range(10))
    b = Pool("x", rows, 4, seed=1)
    b.next()
    c = Pool("x", rows, 4, seed=1)
    c.load_state_dict(b.state_dict())
    assert torch.equal(b.next(), c.next()) and torch.equal(b.next(), c.next())
    r0 = Pool("x", rows, 5, seed=1, rank=0, world=2).next()
    r1 = Pool("x", rows, 5, seed=1, rank=1, world=2).next()
    assert sorted(torch.cat([r0, r1]).tolist()) == list(range(10))


def test_streams_draw_and_resume_identically(phantom_dirs):
    data = _data(phantom_dirs)

    def make():
        pools = {
            k: Pool(k, data.rows[k], 3, seed=0) for k in (MASKED, UNMASKED, LABELED, UNLABELED)
        }
        from multimix.data.augment import AugmentConfig

        return Streams(data.bank, pools, AugmentConfig(), seed=0)

    s1, s2 = make(), make()
    names = {
        MASKED: Stream(MASKED, masks=True),
        UNMASKED: Stream(UNMASKED),
        LABELED: Stream(LABELED, targets=True),
        UNLABELED: Stream(UNLABELED, ("weak", "strong")),
    }
    s1.draw(names)
    s2.load_state_dict(s1.state_dict())
    b1, b2 = s1.draw(names), s2.draw(names)
    assert list(b1) == list(names)
    for name, draw in b1.items():
        other = b2[name]
        assert torch.equal(draw.rows, other.rows), name
        for view, v in draw.views.items():
            assert torch.equal(v.x, other[view].x), (name, view)
            assert (v.masks is None) == (other[view].masks is None)
    seg = b1[MASKED]
    assert seg["weak"].x.shape == (3, 1, 32, 32) and seg["weak"].masks.shape == (3, 1, 32, 32)
    assert torch.equal(b1[LABELED].targets, data.bank.targets[b1[LABELED].rows])
    assert not torch.equal(b1[UNLABELED]["weak"].x, b1[UNLABELED]["strong"].x)


def test_class_domain_marks_the_images_of_class_and_unlabeled_sources(phantom_dirs):
    """The unlabeled stream mixes both sources; each drawn row says whether its source was
    given for the class task, so a method can keep class pseudo-labels off mask-only ones."""
    sources, roles = load_sources(
        {
            "class": [str(phantom_dirs["cls"])],
            "seg": [str(phantom_dirs["seg"])],
            "unlabeled": [str(phantom_dirs["ped"])],
        }
    )
    split = make_split(sources, roles, LABELS, 10, 4, 0.1, 0.2, seed=0)
    data = assemble(sources, split, LABELS, 32, ("lungs",))
    domain = data.class_domain()
    by_source = {r.source for r, d in zip(data.bank.records, domain.tolist(), strict=True) if d}
    assert by_source == {"ph_cls", "ph_ped"}
    from multimix.data.augment import AugmentConfig

    rows = data.rows[UNLABELED]
    pools = {UNLABELED: Pool(UNLABELED, rows, len(rows), seed=0)}
    streams = Streams(data.bank, pools, AugmentConfig(), seed=0, class_domain=domain)
    draw = streams.draw({UNLABELED: Stream(UNLABELED)})[UNLABELED]
    expect = [data.bank.records[i].source != "ph_seg" for i in draw.rows.tolist()]
    assert draw.class_domain.tolist() == expect and not all(expect) and any(expect)
