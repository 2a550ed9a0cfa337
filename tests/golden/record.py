"""Record the golden training figures that ``test_golden.py`` compares against.

Run once on the code before the redesign of issue 11 (commit 552bf01) with
``python tests/golden/record.py``; the JSON it writes is committed. Each case trains a few steps
on fixed 32 px phantoms with a fixed seed and keeps every logged loss and the held-out metrics,
so a refactor that changes any computation shows up as a number that moved.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cases import CASES, run_case, write_phantoms  # noqa: E402


def main() -> None:
    torch.set_num_threads(2)
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_phantoms(Path(tmp))
        for name in CASES:
            losses, metrics = run_case(name, data, Path(tmp) / name)
            out[name] = {"losses": losses, "metrics": metrics}
            print(name, losses[-1])
    (HERE / "golden.json").write_text(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
