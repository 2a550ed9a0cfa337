"""Inference speed of a run: torch (batch norm folded, channels-last) against onnxruntime.

    python benchmarks/onnx_speed.py --run RUN --out benchmarks/results

Exports RUN to a temporary ONNX file (``multimix export``'s code, parity checked), then times
the same forward (class logits, masks, the bridge's saliency) with both on fixed batches, after
warm-up, with the same number of threads. Writes ``onnx_speed.json`` and ``onnx_speed.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

import multimix.api as mm
from multimix.pipelines.export import TOLERANCE, check_batch, export_onnx


def timed(fn, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _time_batches(model, session, args, threads: int) -> list[dict]:
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        x = check_batch(model.image_size, batch, seed=2)
        xl = x.contiguous(memory_format=torch.channels_last)
        feed = {"image": x.numpy()}
        t_torch = timed(lambda xl=xl: model.fast(xl), args.repeats, args.warmup)
        t_onnx = timed(lambda f=feed: session.run(None, f), args.repeats, args.warmup)
        mt, mo = statistics.median(t_torch), statistics.median(t_onnx)
        rows.append({
                "threads": threads,
                "batch": batch,
                "torch_ms_per_batch": round(mt * 1e3, 2),
                "onnx_ms_per_batch": round(mo * 1e3, 2),
                "torch_images_per_s": round(batch / mt, 1),
                "onnx_images_per_s": round(batch / mo, 1),
                "onnx_speedup": round(mt / mo, 2),
            })  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", default="1,2", help="thread counts to time, each for both")
    args = ap.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        report = export_onnx(args.run, path)
        model = mm.load(args.run, device="cpu")
        rows = []
        for threads in thread_counts:
            torch.set_num_threads(threads)
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            rows += _time_batches(model, session, args, threads)

    result = {
        "run": args.run.name,
        "image_size": model.image_size,
        "widths": list(model.cfg.widths),
        "outputs": report.outputs,
        "max_abs_diff": report.max_abs_diff,
        "tolerance": {k: TOLERANCE[k] for k in report.max_abs_diff},
        "threads": thread_counts,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "cpu": platform.processor() or platform.machine(),
        "note": "median of the repeats; a shared 2-core machine (other jobs running)",
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "onnx_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Inference speed: torch against onnxruntime",
        "",
        f"Run `{args.run.name}`: {model.image_size}x{model.image_size}, widths "
        f"{','.join(map(str, model.cfg.widths))}; outputs {', '.join(report.outputs)} (the "
        "bridge's saliency computed in the graph). torch runs the network with batch norm "
        "folded, channels-last; onnxruntime the exported file (CPU provider). "
        f"{args.threads} threads for both, median of {args.repeats} timings after "
        f"{args.warmup} warm-up runs. Measured on the shared 2-core machine while other jobs "
        "ran, so the figures carry that contention.",
        "",
        "| threads | batch | torch ms/batch | onnxruntime ms/batch | torch img/s "
        "| onnxruntime img/s | onnxruntime speed-up |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['threads']} | {r['batch']} | {r['torch_ms_per_batch']} | "
            f"{r['onnx_ms_per_batch']} | "
            f"{r['torch_images_per_s']} | {r['onnx_images_per_s']} | {r['onnx_speedup']}x |"
            for r in rows
        ),
        "",
        "Largest absolute difference onnxruntime vs torch on the export's check batch: "
        + ", ".join(
            f"{k} {v:.3g} (tolerance {TOLERANCE[k]:g})" for k, v in report.max_abs_diff.items()
        )
        + ".",
        "",
        "```bash",
        f"python benchmarks/onnx_speed.py --run RUN --threads {args.threads} "
        f"--repeats {args.repeats}",
        "```",
        "",
    ]
    (args.out / "onnx_speed.md").write_text("\n".join(lines))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
