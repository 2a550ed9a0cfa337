"""Write the pre-redesign checkpoints that ``tests/engine/test_legacy_checkpoint.py`` loads.

Run once on commit 552bf01: trains a multi-class MultiMix run and a multi-label run for two
steps, keeps their weights and configuration under ``tests/fixtures/legacy/`` and the network's
outputs on a fixed input, so later code must rebuild the same network from the old files.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cases import run_case, write_phantoms  # noqa: E402

FIXTURES = HERE.parent / "fixtures" / "legacy"


def fixed_input() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(2, 1, 32, 32, generator=gen)


def main() -> None:
    from multimix.engine.checkpoint import load_weights

    torch.set_num_threads(2)
    outputs = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_phantoms(Path(tmp))
        for name in ("multimix", "multilabel"):
            run = Path(tmp) / name
            run_case(name, data, run)
            dest = FIXTURES / name
            (dest / "checkpoints").mkdir(parents=True, exist_ok=True)
            shutil.copy(run / "config.json", dest / "config.json")
            shutil.copy(run / "checkpoints" / "best.safetensors", dest / "checkpoints")
            model = load_weights(dest / "checkpoints" / "best.safetensors").eval()
            out = model(fixed_input())
            outputs[name] = {k: v.double().sum().item() for k, v in out.items()}
    (FIXTURES / "outputs.json").write_text(json.dumps(outputs, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
