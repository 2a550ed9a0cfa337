import numpy as np
import pytest


def test_zoom_enlarges_the_centre_and_shrinks_with_repeated_borders(benchmark_module):
    zs = benchmark_module("zoom_sensitivity")
    image = np.zeros((40, 40), np.float32)
    image[10:30, 10:30] = 1.0  # a square covering a quarter of the image
    assert zs.zoom(image, 1.0) is image
    bigger = zs.zoom(image, 2.0)  # the central half, enlarged: the square fills it
    assert bigger.shape == image.shape and bigger.min() == pytest.approx(1.0)
    smaller = zs.zoom(image, 0.5)  # the square's side halves: a sixteenth of the area
    assert smaller.shape == image.shape
    assert (smaller > 0.5).mean() == pytest.approx(1 / 16, abs=0.01)
    ramp = np.tile(np.linspace(0, 1, 40, dtype=np.float32), (40, 1))
    assert zs.zoom(ramp, 0.5)[:, 0] == pytest.approx(ramp[:, 0].min(), abs=0.02)


def test_score_counts_accuracy_auc_and_calls_per_true_class(benchmark_module):
    zs = benchmark_module("zoom_sensitivity")
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    truth = ["normal", "normal", "pneumonia", None]
    block = zs.score(probs, truth, ["normal", "pneumonia"])
    assert block["n"] == 4 and block["accuracy"] == pytest.approx(2 / 3)
    assert block["auc"] == pytest.approx(1.0)  # 0.8 ranks above both normals
    assert block["called"]["normal"] == {"normal": 0.5, "pneumonia": 0.5}
    assert block["calls"] == ["normal", "pneumonia", "pneumonia", "pneumonia"]
