from __future__ import annotations

import numpy as np
import pytest
import torch

from multimix.core.errors import DataError
from multimix.data.phantom import make_phantom
from multimix.data.zones import ZONES, box_mask, box_zones, lung_zones, mask_box, read_boxes


def two_lungs(size: int = 30) -> torch.Tensor:
    """Image-left lung: rows 3..26 (24 rows), cols 2..11; image-right: rows 6..23, cols 18..27."""
    m = torch.zeros((size, size), dtype=torch.bool)
    m[3:27, 2:12] = True
    m[6:24, 18:28] = True
    return m


def test_zones_are_thirds_of_each_lungs_own_height():
    zones = lung_zones(two_lungs())
    assert zones[0].max() == 0 and zones[:, 14].max() == 0  # outside and mediastinum
    # Image-left lung (patient's right): 24 rows -> 8 rows per third.
    assert zones[3:11, 5].unique().tolist() == [ZONES.index("right_upper") + 1]
    assert zones[11:19, 5].unique().tolist() == [ZONES.index("right_middle") + 1]
    assert zones[19:27, 5].unique().tolist() == [ZONES.index("right_lower") + 1]
    # Image-right lung: 18 rows -> 6 per third, starting at its own top.
    assert zones[6:12, 20].unique().tolist() == [ZONES.index("left_upper") + 1]
    assert zones[18:24, 20].unique().tolist() == [ZONES.index("left_lower") + 1]


def test_phantom_lungs_give_all_six_zones_in_their_own_lung():
    ph = make_phantom(np.random.default_rng(3), 96)
    zones = lung_zones(torch.from_numpy(ph.masks["lungs"]))
    assert sorted(zones.unique().tolist()) == list(range(7))
    cols = torch.nonzero(zones).float()
    right = cols[zones[zones > 0] <= 3][:, 1].max()
    left = cols[zones[zones > 0] > 3][:, 1].min()
    assert right < left  # patient's right lung is wholly on the image's left


def test_box_to_zone_mapping_uses_the_share_of_the_boxs_lung_pixels():
    zones = lung_zones(two_lungs())[None]
    # A box over the lower third of the image-left lung, spilling 2 rows into the middle third
    # (2 of 10 box rows = 20% of its lung pixels) and beyond the lungs (not counted).
    masks = box_mask([(0, 0, 17, 14, 29)], 2, 30)[None]
    zone_y, touches = box_zones(masks, zones, min_share=0.1)
    assert touches.tolist() == [[True, False]]
    assert zone_y[0, 0].tolist() == [0, 1, 1, 0, 0, 0]
    zone_y, _ = box_zones(masks, zones, min_share=0.25)
    assert zone_y[0, 0].tolist() == [0, 0, 1, 0, 0, 0]


def test_mask_box_and_box_mask_agree():
    m = box_mask([(1, 3.0, 4.0, 9.0, 7.0)], 2, 16)
    assert mask_box(m[1].bool()) == (3, 4, 9, 7) and mask_box(m[0].bool()) is None


def test_read_boxes_both_headers_and_errors(tmp_path):
    ours = tmp_path / "boxes.csv"
    ours.write_text("image,label,x,y,w,h\na.png,Effusion,1,2,3,4\n")
    assert read_boxes(ours, {"a.png"})["a.png"][0].w == 3.0
    nih = tmp_path / "BBox_List_2017.csv"
    nih.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\na.png,Nodule,5,6,7,8\n")
    assert read_boxes(nih, {"a.png"})["a.png"][0].finding == "Nodule"
    ours.write_text("image,label,x,y,w,h\nb.png,Effusion,1,2,3,4\n")
    with pytest.raises(DataError, match=r"line 2 names 'b\.png'"):
        read_boxes(ours, {"a.png"})
    ours.write_text("image,label,x,y,w,h\na.png,Effusion,1,2,zero,4\n")
    with pytest.raises(DataError, match=r"boxes\.csv: line 2"):
        read_boxes(ours, {"a.png"})


def test_zone_labels_are_read_and_bad_rows_named(tmp_path):
    from multimix.data.zones import read_zone_labels

    path = tmp_path / "zones.csv"
    path.write_text("image,label,zone\na.png,Effusion,Left Lower\na.png,Nodule,right_upper\n")
    assert read_zone_labels(path, {"a.png"}) == {"a.png": [("Effusion", 6), ("Nodule", 1)]}
    path.write_text("image,label,zone\na.png,Effusion,apex\n")
    with pytest.raises(DataError, match="line 2: zone 'apex' is not one of"):
        read_zone_labels(path, {"a.png"})
    path.write_text("image,label\na.png,Effusion\n")
    with pytest.raises(DataError, match="missing column"):
        read_zone_labels(path, {"a.png"})
