"""``multimix finalize``: redo a finished run's after-training decisions with this multimix.

What a run decides after training (``engine.finalize``: the task's temperature or
thresholds, the mask plan, the shift reference) is written by the version that trained it. A
newer multimix may decide more (flip averaging of masks) or read only a newer kind of file
(the covariance shift reference), so an older run would predict without them. This reloads
the run's own data by its ``split.json`` (the same training and validation images) and its
best checkpoint, and writes those files again; the weights and the split are not touched.
"""

from __future__ import annotations

from pathlib import Path

from multimix.core.errors import CheckpointError


def refinalize(run: str | Path, device: str = "auto") -> Path:
    """Rewrite ``run``'s after-training files; the run folder back."""
    from multimix.core.runlock import run_lock
    from multimix.data.assemble import assemble, load_sources, load_split
    from multimix.engine.evaluate import load_run
    from multimix.engine.finalize import finalize_run
    from multimix.engine.runtime import select_device

    run = Path(run)
    dev = select_device(device)
    cfg, best = load_run(run, device=dev)
    if not (run / "split.json").exists():
        raise CheckpointError(run, "has no split.json: not a finished multimix run")
    with run_lock(run):  # not while a training writes the same folder
        task = cfg.make_task()
        method = cfg.make_method(task)
        sources, _ = load_sources(cfg.data_folders())
        split = load_split(run / "split.json")
        data = assemble(sources, split, task.space, cfg.image_size, tuple(cfg.structures))
        finalize_run(run, best, data, task, method.trains_segmentation, cfg.seed, dev)
    return run
