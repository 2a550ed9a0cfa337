"""``multimix serve``: one loaded model behind a small JSON API and one page.

Endpoints: ``GET /`` (the page), ``GET /health``, ``GET /model`` (what the run is), ``POST
/predict`` (a multipart upload in the field ``file``). Every prediction goes through
:class:`multimix.api.Model`, the code ``multimix predict`` runs.

How it stays up under load and bad input:

- One worker thread owns the model, so it is loaded once and never used by two threads at once.
  Requests wait in a bounded queue; the worker takes what is waiting (up to ``max_batch``) and
  predicts it as one batch, so concurrent clients share forward passes and memory stays bounded
  by ``queue_size`` uploads of at most ``max_upload_mb`` each. A full queue is ``503``.
- The body is read with a byte cap (``413`` past it, from ``Content-Length`` before reading)
  and parsed in memory: nothing of an upload, its file name least of all, is written to disk.
  The file name is only shown back, reduced to a printable base name.
- An unreadable upload (not an image, truncated, a DICOM without pixels) is a ``4xx`` with a
  one-line ``detail``; an unexpected error in one prediction is a ``500`` for that request only.
- With a token, ``/predict`` and ``/model`` need ``Authorization: Bearer TOKEN``.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hmac
import queue
import threading
import unicodedata
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from multimix.api import EXPLAIN_METHODS, Model, Prediction, png_bytes
from multimix.core.errors import MultimixError

__all__ = ["DISPLAY_MAX_SIDE", "Predictor", "ServeOptions", "UploadError", "create_app"]

DISPLAY_MAX_SIDE = 1024  # the page's image and maps are shrunk to this; masks stay full size
_NAME_CHARS = 80


@dataclass
class ServeOptions:
    """Limits of one service."""

    token: str | None = None
    max_upload_mb: float = 32.0
    queue_size: int = 16
    max_batch: int = 8

    @property
    def max_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class UploadError(Exception):
    """A request the service refuses: an HTTP status and one line saying why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


# -- the worker ------------------------------------------------------------------------------
@dataclass
class Job:
    data: bytes
    name: str
    methods: tuple[str, ...]
    masks: bool
    image: bool
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class Predictor:
    """The one thread that runs the model, fed by a bounded queue."""

    def __init__(self, model: Model, queue_size: int = 16, max_batch: int = 8) -> None:
        self.model = model
        self.max_batch = max(1, max_batch)
        self.jobs: queue.Queue[Job | None] = queue.Queue(maxsize=max(1, queue_size))
        self.served = 0
        self.batches = 0
        self.thread = threading.Thread(target=self._loop, name="multimix-predict", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> concurrent.futures.Future:
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise UploadError(503, "the server is busy (queue full); try again shortly") from None
        return job.future

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            batch = [job]
            while len(batch) < self.max_batch:
                try:
                    more = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.jobs.put(None)  # stop after this batch
                    break
                batch.append(more)
            self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        """Decode each upload, then predict together those asking for the same maps."""
        from multimix.api import read_input

        groups: dict[tuple[str, ...], list[tuple[Job, np.ndarray]]] = {}
        for job in batch:
            try:
                image, _ = read_input(job.data, job.name)
            except MultimixError as exc:
                job.future.set_exception(UploadError(422, str(exc)))
                continue
            except Exception as exc:  # a decoder bug must not stop the worker
                job.future.set_exception(UploadError(422, f"{job.name}: unreadable ({exc})"))
                continue
            finally:
                job.data = b""  # the bytes are not needed past decoding
            groups.setdefault(job.methods, []).append((job, image))
        for methods, items in groups.items():
            try:
                preds = self.model.predict_images(
                    [img for _, img in items], list(methods), [j.name for j, _ in items]
                )
                self.batches += 1
                for (job, image), pred in zip(items, preds, strict=True):
                    job.future.set_result(response(pred, image, job.masks, job.image))
                    self.served += 1
            except Exception as exc:
                reason = " ".join(str(exc).split())[:200] or type(exc).__name__
                for job, _ in items:
                    if not job.future.done():
                        job.future.set_exception(UploadError(500, f"prediction failed: {reason}"))


# -- responses -------------------------------------------------------------------------------
def _b64_png(array: np.ndarray) -> str:
    return base64.b64encode(png_bytes(array)).decode("ascii")


def _display(array: np.ndarray) -> np.ndarray:
    """``array`` (float in [0, 1]) shrunk to at most DISPLAY_MAX_SIDE on its long side."""
    import torch
    import torch.nn.functional as F

    height, width = array.shape
    scale = min(1.0, DISPLAY_MAX_SIDE / max(height, width))
    if scale >= 1.0:
        return array
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    return F.interpolate(t, size=size, mode="area")[0, 0].numpy()


def response(pred: Prediction, image: np.ndarray, masks: bool, show: bool) -> dict[str, Any]:
    """The JSON of one prediction: every class or finding by name with its probability
    (``findings``), the summary of :meth:`Prediction.to_dict`, and on request the masks (full
    size), the image and the explanation maps (display size) as base64 PNGs."""
    body = pred.to_dict()
    thresholds = pred.thresholds or {}
    body["findings"] = [
        {
            "name": c,
            "probability": round(float(p), 6),
            "threshold": thresholds.get(c),
            "predicted": c in pred.predicted,
        }
        for c, p in pred.probabilities.items()
    ]
    if masks:
        body["masks"] = {s: _b64_png(m) for s, m in pred.masks.items()}
        body["mask_structure"] = next(
            (s for s in pred.masks if s == "lungs"), next(iter(pred.masks), None)
        )
    if show:
        body["image"] = _b64_png(_display(image))
    if pred.explanations:
        body["explanations"] = {
            method: {target: _b64_png(_display(heat)) for target, heat in maps.items()}
            for method, maps in pred.explanations.items()
        }
    return body


def safe_name(filename: str | None) -> str:
    """A client's file name as shown back: its last path part, printable, bounded; never a
    path (``../../etc/passwd`` is ``passwd``), and never used to open or write anything."""
    if not filename:
        return "upload"
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in base if unicodedata.category(ch)[0] not in ("C", "Z") or ch == " ")
    text = text.strip().lstrip(".") or "upload"
    return text[:_NAME_CHARS]


# -- multipart, in memory --------------------------------------------------------------------
def parse_upload(content_type: str, body: bytes) -> tuple[bytes, str]:
    """The bytes and display name of the part named ``file`` of a multipart/form-data body."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    kind, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UploadError(400, "send multipart/form-data with the image in the field 'file'")
    parts: list[tuple[dict[bytes, bytes], bytes]] = []
    state: dict[str, Any] = {}

    def begin() -> None:
        state.update(headers={}, field=b"", value=b"", data=bytearray())

    def header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def part_data(data: bytes, start: int, end: int) -> None:
        state["data"] += data[start:end]

    def part_end() -> None:
        parts.append((state["headers"], bytes(state["data"])))

    callbacks = {
        "on_part_begin": begin,
        "on_header_field": header_field,
        "on_header_value": header_value,
        "on_header_end": header_end,
        "on_part_data": part_data,
        "on_part_end": part_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except (MultipartParseError, ValueError) as exc:
        raise UploadError(400, f"malformed multipart body ({exc})") from None
    for headers, data in parts:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        if disposition.get(b"name") == b"file":
            raw = disposition.get(b"filename", b"").decode("utf-8", "replace")
            return data, safe_name(raw)
    raise UploadError(400, "no field 'file' in the upload")


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _methods(value: str | None) -> tuple[str, ...]:
    items = [m.strip() for m in (value or "").split(",") if m.strip()]
    unknown = [m for m in items if m not in EXPLAIN_METHODS]
    if unknown:
        choices = ", ".join(EXPLAIN_METHODS)
        raise UploadError(400, f"unknown explanation method {unknown[0]!r}; choose from {choices}")
    return tuple(dict.fromkeys(items))


# -- the app ---------------------------------------------------------------------------------
def page_html() -> str:
    return resources.files("multimix.serve").joinpath("page.html").read_text(encoding="utf-8")


def create_app(model: Model, options: ServeOptions | None = None):
    """The FastAPI app serving ``model`` (its worker thread starts here)."""
    options = options or ServeOptions()
    predictor = Predictor(model, options.queue_size, options.max_batch)
    info = model.info()
    page = page_html()

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        predictor.close()

    app = FastAPI(
        title="multimix", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.predictor = predictor

    def refuse(status: int, reason: str) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"detail": reason}, status_code=status, headers=headers)

    def authorized(request: Request) -> bool:
        if not options.token:
            return True
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.strip().encode(), options.token.encode())

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "model": info["run"],
            "task": info["task"],
            "auth": bool(options.token),
            "queued": predictor.jobs.qsize(),
            "queue_size": predictor.jobs.maxsize,
            "served": predictor.served,
            "max_upload_mb": options.max_upload_mb,
        }

    @app.get("/model")
    async def model_info(request: Request):
        if not authorized(request):
            return refuse(401, "missing or wrong bearer token")
        return info

    @app.post("/predict")
    async def predict(request: Request):
        if not authorized(request):
            return refuse(401, "missing or wrong bearer token")
        try:
            methods = _methods(request.query_params.get("explain"))
            if methods and model.backend != "torch":
                raise UploadError(400, "explanation maps need the torch backend")
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > options.max_bytes:
                raise UploadError(413, _too_large(options))
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > options.max_bytes:
                    raise UploadError(413, _too_large(options))
            data, name = parse_upload(request.headers.get("content-type", ""), bytes(body))
            del body
            q = request.query_params
            job = Job(data, name, methods, _flag(q.get("masks")), _flag(q.get("image")))
            future = predictor.submit(job)
            return await asyncio.wrap_future(future)
        except UploadError as exc:
            return refuse(exc.status, exc.reason)

    return app


def _too_large(options: ServeOptions) -> str:
    return f"upload larger than the limit of {options.max_upload_mb:g} MB (--max-upload-mb)"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    model: Model,
    host: str = "127.0.0.1",
    port: int = 8000,
    options: ServeOptions | None = None,
    allow_open: bool = False,
    log=print,
) -> None:
    """Serve ``model`` with uvicorn until interrupted.

    Only this machine can reach the default address. Another address is an explicit choice,
    and without a token it must be asked for twice (``allow_open``): the model and whatever is
    uploaded to it would otherwise be open to anyone who can reach the port.
    """
    import uvicorn

    from multimix.core.errors import ConfigError

    options = options or ServeOptions()
    if not 0 < port < 65536:
        raise ConfigError("--port must lie in 1..65535")
    if options.max_upload_mb <= 0:
        raise ConfigError("--max-upload-mb must be positive")
    if not is_loopback(host) and not options.token and not allow_open:
        raise ConfigError(
            f"--host {host} serves beyond this machine: give --token T (clients send "
            "'Authorization: Bearer T'), or --allow-open to serve without one"
        )
    app = create_app(model, options)
    shown = f"[{host}]" if ":" in host else host
    log(f"serving {model.run.name} ({model.cfg.task}) on http://{shown}:{port}/")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
