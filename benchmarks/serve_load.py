"""Load test of ``multimix serve`` on localhost: N concurrent clients against one.

    python benchmarks/serve_load.py --run RUN --image IMG --clients 8 --requests 200

Starts ``multimix serve RUN`` on a free 127.0.0.1 port in its own process, waits for
``/health``, then sends a fixed number of ``POST /predict`` requests: first from one client
(the baseline), then from ``--clients`` concurrent clients. Every request, time and count is
bounded (``--max-seconds`` stops the run early, and it says so). Reports requests per second,
p50/p95 latency, errors (any status but 200) and the server's peak resident memory, sampled
every 50 ms. Only this machine is ever addressed. Writes ``serve_load.json`` and
``serve_load.md``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

HOST = "127.0.0.1"  # the only address this benchmark talks to


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def multipart(data: bytes, name: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), boundary


class Memory:
    """Peak RSS of a process (and its children), sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.proc, self.peak, self.stop = psutil.Process(pid), 0, threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                rss = self.proc.memory_info().rss
                rss += sum(c.memory_info().rss for c in self.proc.children(recursive=True))
                self.peak = max(self.peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.05)

    def reset(self) -> None:
        self.peak = 0


def one_request(port: int, body: bytes, boundary: str, path: str) -> tuple[int, float]:
    start = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    try:
        conn.request(
            "POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        resp = conn.getresponse()
        resp.read()
        status = resp.status
    except OSError:
        status = -1
    finally:
        conn.close()
    return status, time.perf_counter() - start


def phase(port, body, boundary, path, clients: int, requests: int, deadline: float) -> dict:
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                if next(counter, None) is None:
                    return
            status, seconds = one_request(port, body, boundary, path)
            with lock:
                statuses.append(status)
                latencies.append(seconds)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(client)
    wall = time.perf_counter() - start
    done = len(latencies)
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "requests": done,
        "asked": requests,
        "stopped_early": done < requests,
        "seconds": round(wall, 3),
        "requests_per_s": round(done / wall, 2) if wall else None,
        "p50_ms": round(1e3 * statistics.median(ordered), 1) if ordered else None,
        "p95_ms": round(1e3 * ordered[min(done - 1, int(0.95 * done))], 1) if ordered else None,
        "errors": sum(1 for s in statuses if s != 200),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--baseline-requests", type=int, default=50)
    ap.add_argument("--explain", default="", help="e.g. saliency: maps in every answer")
    ap.add_argument("--masks", action="store_true", help="masks as PNG in every answer")
    ap.add_argument("--max-seconds", type=float, default=300.0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    port = free_port()
    env = {**os.environ, "MULTIMIX_NO_REEXEC": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "multimix", "serve", str(args.run), "--host", HOST,
         "--port", str(port), "--device", "cpu"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        started = time.monotonic()
        while True:
            try:
                conn = http.client.HTTPConnection(HOST, port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() - started > 120:
                raise SystemExit(f"the server did not start: {server.stderr.read().decode()}")
            time.sleep(0.2)
        memory = Memory(server.pid)
        idle_rss = psutil.Process(server.pid).memory_info().rss
        body, boundary = multipart(args.image.read_bytes(), args.image.name)
        query = [f"explain={args.explain}"] if args.explain else []
        query += ["masks=1"] if args.masks else []
        path = "/predict" + ("?" + "&".join(query) if query else "")
        deadline = time.monotonic() + args.max_seconds
        phase(port, body, boundary, path, 1, 3, deadline)  # warm-up
        memory.reset()
        base = phase(port, body, boundary, path, 1, args.baseline_requests, deadline)
        base["peak_rss_mb"] = round(memory.peak / 2**20, 1)
        memory.reset()
        load = phase(port, body, boundary, path, args.clients, args.requests, deadline)
        load["peak_rss_mb"] = round(memory.peak / 2**20, 1)
        memory.stop.set()
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    result = {
        "run": args.run.name,
        "image": args.image.name,
        "path": path,
        "idle_rss_mb": round(idle_rss / 2**20, 1),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "baseline": base,
        "concurrent": load,
        "throughput_ratio": round(load["requests_per_s"] / base["requests_per_s"], 2)
        if base["requests_per_s"]
        else None,
        "note": "localhost, one server process (one model worker, batched queue); measured on "
        "a shared 2-core machine while other jobs ran, so the figures carry that contention",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve_load.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        f"| {p['clients']} | {p['requests']} | {p['requests_per_s']} | {p['p50_ms']} | "
        f"{p['p95_ms']} | {p['errors']} | {p['peak_rss_mb']} |"
        for p in (base, load)
    ]
    text = [
        "# multimix serve under load (localhost)",
        "",
        f"Run `{args.run.name}`, image `{args.image.name}`, `POST {path}`. One server process "
        "(the model in one worker thread, waiting requests predicted as one batch of up to 8). "
        f"OMP_NUM_THREADS={result['omp_num_threads']}. Server resident memory at rest "
        f"{result['idle_rss_mb']} MB; peak sampled every 50 ms. "
        "Measured on the shared 2-core machine while other jobs ran: the figures carry that "
        "contention.",
        "",
        "| clients | requests | requests/s | p50 ms | p95 ms | errors | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Throughput with {args.clients} clients: {result['throughput_ratio']}x one client's.",
        "",
        "```bash",
        f"python benchmarks/serve_load.py --run RUN --image IMG --clients {args.clients} "
        f"--requests {args.requests}"
        + (f" --explain {args.explain}" if args.explain else "")
        + (" --masks" if args.masks else ""),
        "```",
        "",
    ]
    (args.out / "serve_load.md").write_text("\n".join(text))
    print(json.dumps({"baseline": base, "concurrent": load}))


if __name__ == "__main__":
    main()
