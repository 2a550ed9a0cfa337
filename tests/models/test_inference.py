"""Batched inference: uint8 images only; test-time flipping averages the masks only."""

from __future__ import annotations

import pytest
import torch

from multimix.models.inference import image_batches, run_model
from multimix.models.net import ModelConfig, MultiMixNet


def test_flipped_masks_are_the_mean_of_the_image_and_its_mirror_mirrored_back():
    torch.manual_seed(0)
    net = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16))).eval()
    images = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8)
    cpu = torch.device("cpu")
    plain = run_model(net, images, cpu, lambda z: z.float())
    mirrored = run_model(net, images.flip(-1), cpu, lambda z: z.float())
    both = run_model(net, images, cpu, lambda z: z.float(), flip_masks=True)
    expected = (plain.masks.float() + mirrored.masks.float().flip(-1)) / 2
    torch.testing.assert_close(both.masks.float(), expected, atol=2e-3, rtol=0)
    assert not torch.allclose(plain.masks.float(), both.masks.float())  # the net is not symmetric
    torch.testing.assert_close(both.probs, plain.probs)  # classes: the image as given


def test_image_batches_refuse_images_that_are_not_uint8():
    """A float image in [0, 1] would be divided by 255 again and reach the network black."""
    u8 = torch.full((3, 1, 4, 4), 255, dtype=torch.uint8)
    batches = list(image_batches(u8, 2, torch.device("cpu")))
    assert [len(b) for b in batches] == [2, 1] and float(batches[0].max()) == 1.0
    with pytest.raises(TypeError, match="uint8"):
        list(image_batches(u8.float() / 255, 2, torch.device("cpu")))
