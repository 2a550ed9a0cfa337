"""The service through an ASGI test client: predict, health, model, bad uploads, limits, auth."""

from __future__ import annotations

import base64
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import multimix.api as mm
from multimix.serve.app import (
    Job,
    Predictor,
    ServeOptions,
    UploadError,
    create_app,
    is_loopback,
    safe_name,
)
from tests.conftest import save_radiograph_dicom

TOKEN = "test-token-1234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def model(served_run) -> mm.Model:
    return mm.load(served_run)


@pytest.fixture(scope="module")
def radiograph(phantom_dirs) -> Path:
    return sorted((phantom_dirs["seg"] / "images").glob("*.png"))[1]


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app(model, ServeOptions(max_upload_mb=1.0))) as c:
        yield c


def upload(client, data: bytes, name: str = "x.png", query: str = "", **kw):
    return client.post(f"/predict{query}", files={"file": (name, data, "image/png")}, **kw)


def png_array(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_health_and_model(client, served_run):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["auth"] is False
    info = client.get("/model").json()
    assert info["task"] == "multiclass" and info["classes"] == ["normal", "pneumonia"]
    assert info["image_size"] == 32 and info["structures"] == ["lungs"]
    source = info["training"]["sources"]["ph_seg"]
    assert source["roles"] == ["class", "seg"] and source["train"] > 0
    assert info["training"]["steps"] == 40
    assert info["training"]["last_validation"]["step"] == "40"


def test_predict_names_each_class_and_matches_the_api(client, model, radiograph):
    r = upload(client, radiograph.read_bytes(), "chest.png", "?masks=1&image=1&explain=gradcam")
    assert r.status_code == 200, r.text
    body = r.json()
    ref = model.predict(radiograph, explain="gradcam")
    assert body["name"] == "chest.png"
    assert [f["name"] for f in body["findings"]] == ["normal", "pneumonia"]
    for f in body["findings"]:
        assert f["probability"] == pytest.approx(ref.probabilities[f["name"]], abs=1e-5)
        assert f["predicted"] == (f["name"] in ref.predicted)
    assert body["predicted"] == ref.predicted
    mask = png_array(body["masks"]["lungs"]) > 0
    assert mask.shape == (64, 64) and np.array_equal(mask, ref.masks["lungs"])
    assert png_array(body["image"]).shape == (64, 64)
    heat = png_array(body["explanations"]["gradcam"][ref.predicted[0]]) / 255.0
    assert np.abs(heat - ref.explanations["gradcam"][ref.predicted[0]]).max() <= 1 / 255 + 1e-6


def test_plain_predict_is_small(client, radiograph):
    body = upload(client, radiograph.read_bytes()).json()
    assert "masks" not in body and "image" not in body and "explanations" not in body
    assert body["lung_area_fraction"] > 0.05


def test_dicom_upload(client, radiograph, tmp_path):
    from multimix.data.io import read_image

    dicom = save_radiograph_dicom(tmp_path / "a.dcm", read_image(radiograph))
    r = upload(client, dicom.read_bytes(), "a.dcm", "?masks=1")
    assert r.status_code == 200, r.text
    assert png_array(r.json()["masks"]["lungs"]).shape == (64, 64)


def _dicom_without_pixels(tmp_path) -> bytes:
    ds = pydicom.dcmread(save_radiograph_dicom(tmp_path / "p.dcm", np.zeros((8, 8))))
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_bad_uploads_are_4xx_one_line_and_the_server_keeps_serving(client, radiograph, tmp_path):
    good = radiograph.read_bytes()
    bad = {
        "text": (b"hello, this is not an image" * 10, 422, "not a PNG, JPEG or DICOM"),
        "truncated": (good[: len(good) // 3], 422, "truncated"),
        "empty": (b"", 422, "empty file"),
        "dicom": (_dicom_without_pixels(tmp_path), 422, "no pixel data"),
    }
    for kind, (data, status, reason) in bad.items():
        r = upload(client, data, f"{kind}.png")
        assert r.status_code == status, (kind, r.text)
        detail = r.json()["detail"]
        assert reason in detail and "\n" not in detail, kind
    r = client.post("/predict", files={"image": ("x.png", good, "image/png")})
    assert r.status_code == 400 and "field 'file'" in r.json()["detail"]
    r = client.post("/predict", content=b"raw bytes", headers={"content-type": "image/png"})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["detail"]
    r = upload(client, good, query="?explain=lime")
    assert r.status_code == 400 and "lime" in r.json()["detail"]
    assert upload(client, good).status_code == 200  # still serving


def test_size_limit_is_413(client):
    big = b"\x89PNG\r\n\x1a\n" + b"0" * (1024 * 1024 + 10)
    r = upload(client, big, "big.png")
    assert r.status_code == 413 and "1 MB" in r.json()["detail"]

    def chunks():  # no Content-Length: the streamed body is cut at the limit
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
        for _ in range(40):
            yield b"0" * 65536

    headers = {"content-type": "multipart/form-data; boundary=b"}
    r = client.post("/predict", content=chunks(), headers=headers)
    assert r.status_code == 413


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "..\\..\\windows\\win.ini", "/abs/path/x.png", "..", "a\x00b.png"],
)
def test_client_file_names_never_touch_the_file_system(client, radiograph, tmp_path, name):
    before = set(os.listdir(tmp_path))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        r = upload(client, radiograph.read_bytes(), name)
    finally:
        os.chdir(cwd)
    assert r.status_code == 200, r.text
    shown = r.json()["name"]
    assert "/" not in shown and "\\" not in shown and "\x00" not in shown
    assert not shown.startswith(".")
    assert set(os.listdir(tmp_path)) == before


def test_safe_name():
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("C:\\x\\scan.dcm") == "scan.dcm"
    assert safe_name("..") == "upload" and safe_name(None) == "upload"
    assert safe_name("a\nb\x07.png") == "ab.png"
    assert len(safe_name("x" * 500)) == 80


def test_token_auth(model, radiograph):
    with TestClient(create_app(model, ServeOptions(token=TOKEN))) as c:
        assert c.get("/health").json()["auth"] is True
        assert c.get("/").status_code == 200  # the page itself holds nothing
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            assert c.get("/model", headers=headers).status_code == 401
            r = upload(c, radiograph.read_bytes(), headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.get("/model", headers=AUTH).status_code == 200
        assert upload(c, radiograph.read_bytes(), headers=AUTH).status_code == 200


def test_concurrent_requests_all_answered(client, radiograph):
    data = radiograph.read_bytes()
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda _: upload(client, data).status_code, range(8)))
    assert codes == [200] * 8


def test_page_is_self_contained(client):
    page = client.get("/").text
    assert 'id="files"' in page and "predict?explain=" in page
    for remote in ("http://", "https://", "//cdn"):
        assert remote not in page


class BlockingModel:
    """The real model, whose first call waits until released: the queue fills meanwhile."""

    def __init__(self, model: mm.Model) -> None:
        self.model, self.entered, self.release = model, threading.Event(), threading.Event()
        self.calls: list[int] = []

    def predict_images(self, images, methods, names):
        self.calls.append(len(images))
        self.entered.set()
        assert self.release.wait(30)
        return self.model.predict_images(images, methods, names)


def test_queue_is_bounded_and_waiting_requests_are_batched(model, radiograph):
    slow = BlockingModel(model)
    predictor = Predictor(slow, queue_size=2, max_batch=8)  # type: ignore[arg-type]
    data = radiograph.read_bytes()
    try:
        first = predictor.submit(Job(data, "a", (), False, False))
        assert slow.entered.wait(30)  # the worker holds the first request
        waiting = [predictor.submit(Job(data, n, (), False, False)) for n in "bc"]
        with pytest.raises(UploadError) as full:
            predictor.submit(Job(data, "d", (), False, False))
        assert full.value.status == 503
        slow.release.set()
        names = [f.result(timeout=30)["name"] for f in (first, *waiting)]
        assert names == ["a", "b", "c"]
        assert slow.calls == [1, 2]  # the two that waited went through as one batch
    finally:
        slow.release.set()
        predictor.close()


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
