"""Zone targets come only from lung masks the run may use (``--labeled-seg``)."""

from __future__ import annotations

import torch

from multimix.config import TrainConfig
from multimix.core.batch import LABELED, MASKED, Stream
from multimix.engine.trainer import Trainer

DRAWS = {MASKED: Stream(MASKED, masks=True), LABELED: Stream(LABELED, targets=True)}


def test_zone_targets_never_use_held_back_masks(tmp_path, multilabel_run):
    data = str(multilabel_run["data"])
    cfg = TrainConfig(
        out=str(tmp_path / "run"), task="multilabel", method="multilabel",
        class_data=[data], seg_data=[data], labeled_seg=6,
        classes=["cardiomegaly", "effusion", "nodule", "opacity"], image_size=32,
        widths=[8, 16, 16, 32, 32], steps=1, batch_size=16,
        task_options={"aux": ["segmentation", "localization"]},
    )  # fmt: skip
    (tmp_path / "run").mkdir()
    cfg.save(tmp_path / "run")
    trainer = Trainer(cfg)
    allowed = {int(r) for r in trainer.data.rows[MASKED]}
    assert len(allowed) == 6
    streams = trainer.streams
    zones = streams.label_maps
    assert {int(r) for r in zones.mask_allowed.nonzero()[:, 0]} == allowed
    pool, drawn = streams.pools[LABELED], []
    original = pool.next
    pool.next = lambda: drawn.append(original()) or drawn[-1]  # record the rows drawn
    seen_known = 0
    for _ in range(6):
        batch = streams.draw(DRAWS)
        rows = drawn[-1].tolist()
        zone_known = batch[LABELED]["weak"].extras["zone_known"]
        for row, known in zip(rows, zone_known.any(dim=1).tolist(), strict=True):
            assert not known or row in allowed
            seen_known += known
    assert seen_known > 0  # some images do carry zone targets


def test_zone_labels_from_zones_csv_become_zone_targets(tmp_path, multilabel_run):
    import shutil

    from multimix.data.augment import AugmentConfig
    from multimix.data.zones import ZONES

    data = tmp_path / "zoned"
    shutil.copytree(multilabel_run["data"], data)
    (data / "boxes.csv").unlink()
    names = sorted(p.name for p in (data / "images").iterdir())
    (data / "zones.csv").write_text(
        "image,label,zone\n" + "".join(f"{n},Effusion,left_lower\n" for n in names)
    )
    cfg = TrainConfig(
        out=str(tmp_path / "run"), task="multilabel", method="multilabel",
        class_data=[str(data)], seg_data=[str(data)],
        classes=["cardiomegaly", "effusion", "nodule", "opacity"], image_size=32,
        widths=[8, 16, 16, 32, 32], steps=1, batch_size=8,
        augment=AugmentConfig(flip=False, max_shift=0.0),
        task_options={"aux": ["segmentation", "localization"]},
    )  # fmt: skip
    (tmp_path / "run").mkdir()
    cfg.save(tmp_path / "run")
    extras = Trainer(cfg).streams.draw(DRAWS)[LABELED]["weak"].extras
    effusion, left_lower = 1, ZONES.index("left_lower")
    known = extras["zone_known"][:, effusion]
    assert known.all()  # every image has a lung mask the run may use (all masks kept)
    expected = torch.zeros(len(ZONES))
    expected[left_lower] = 1
    assert (extras["zone_y"][:, effusion] == expected).all()
    assert not extras["zone_known"][:, 0].any()  # no zone label, no box: cardiomegaly unsupervised
