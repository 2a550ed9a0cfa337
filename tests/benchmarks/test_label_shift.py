import numpy as np


def test_em_prior_recovers_a_shifted_prior(benchmark_module):
    ls = benchmark_module("label_shift")
    rng = np.random.default_rng(0)
    # A calibrated classifier under a 50/50 training prior; the folder is 80% class 1.
    truth = (rng.random(4000) < 0.8).astype(int)
    llr = rng.normal(np.where(truth == 1, 1.0, -1.0), 1.5)  # log-likelihood ratio, class 1
    p1 = 1 / (1 + np.exp(-llr))
    adapted, prior = ls.em_prior(np.stack([1 - p1, p1], 1), np.array([0.5, 0.5]))
    assert abs(prior[1] - 0.8) < 0.03
    assert np.allclose(adapted.sum(1), 1)
    assert (adapted.argmax(1) == truth).mean() > (p1.round() == truth).mean()


def test_em_prior_leaves_a_folder_at_the_training_prior_alone(benchmark_module):
    ls = benchmark_module("label_shift")
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.5, 0.5]])
    adapted, prior = ls.em_prior(probs, np.array([0.5, 0.5]))
    assert np.allclose(prior, [0.5, 0.5]) and np.allclose(adapted, probs)


def test_table_has_a_row_per_run_and_folder(benchmark_module):
    ls = benchmark_module("label_shift")
    f = {
        "images": 11, "accuracy_plain": 0.36364, "recall_plain": {"normal": 4, "pneumonia": 0},
        "accuracy_em": 0.27273, "recall_em": {"normal": 3, "pneumonia": 0},
        "support": {"normal": 11, "pneumonia": 0},
        "prior_em": {"normal": 0.3079, "pneumonia": 0.6921},
    }  # fmt: skip
    rows = ls.table({"run-a": {"adult_normals": f}}).strip().splitlines()[2:]
    assert rows == [
        "| run-a | adult_normals | 11 | normal 11, pneumonia 0 | 0.3636 | normal 4, pneumonia 0 "
        "| normal 0.308, pneumonia 0.692 | 0.2727 | normal 3, pneumonia 0 |"
    ]


def test_a_training_source_is_scored_on_its_test_part_and_labels_are_mapped(
    benchmark_module, tmp_path
):
    import json

    from PIL import Image

    from multimix.data.labels import LabelSpace

    ls = benchmark_module("label_shift")
    src, other = tmp_path / "src", tmp_path / "other"
    for folder in (src, other):
        (folder / "images").mkdir(parents=True)
        for name in ("a.png", "b.png", "c.png"):
            Image.new("L", (8, 8)).save(folder / "images" / name)
        (folder / "labels.csv").write_text("image,label\na.png,covid\nb.png,normal\nc.png,normal\n")
    run = tmp_path / "run"
    run.mkdir()
    split = {
        "sources": {"src": {"root": str(src.resolve()), "roles": ["class"],
                            "train": ["b.png", "c.png"], "val": [], "test": ["a.png"]}},
        "labeled_class": {"src": ["b.png", "c.png"]},
    }  # fmt: skip
    (run / "split.json").write_text(json.dumps(split))
    labels = LabelSpace(("normal", "pneumonia"), {"covid": "pneumonia"})
    assert ls.labelled_images(src, run, labels) == [(src / "images" / "a.png", 1)]
    assert sorted(k for _, k in ls.labelled_images(other, run, labels)) == [0, 0, 1]
    prior = ls.train_prior(run, ("normal", "pneumonia"), (("covid", "pneumonia"),))
    assert prior.tolist() == [1.0, 0.0]
