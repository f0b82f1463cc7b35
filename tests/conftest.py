"""Shared fixtures: where MNIST is, tiny IDX files written on the fly, test photos, and a real
``python -m runtime serve`` process on a free localhost port with the HTTP calls its tests make.

Test modules take these as fixtures; none imports this module (or another test module).
"""
from __future__ import annotations

import contextlib
import email.message
import gzip
import json
import os
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

# One intra-op thread for the suite and every process it starts (set before anything imports torch): its
# models are tiny, so a second thread mostly waits on the first, and on a 2-core machine the tests that run
# two processes at once (ranks, a server and its client) would otherwise ask for four. On this machine the
# suite took 398 s this way against 921 s with torch's default, a training run beside it in both.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = REPO / "runtime" / "models" / "digits-int8.onnx"
# Development override (e.g. to run the suite against the FP32 model); by
# default the tests use the model users get.
MODEL = Path(os.environ.get("EDGE_DIGITS_MODEL", SHIPPED_MODEL))


def pytest_collection_modifyitems(config, items):
    """Tests marked needs_model are skipped, saying why, when the classifier is absent."""
    if MODEL.is_file():
        return
    skip = pytest.mark.skip(reason=f"model {MODEL} not present: it is built by the export step and shipped in "
                                   "runtime/models")
    for item in items:
        if item.get_closest_marker("needs_model"):
            item.add_marker(skip)


def _write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _write_dataset(directory: Path, n_train: int = 600, n_test: int = 200, seed: int = 0,
                   compress: bool = False) -> Path:
    """A small learnable dataset in IDX format: each class is a bright bar at its own height."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label:4 + 2 * label, 4:24] = 255
        _write_idx(directory / f"{split}-images-idx3-ubyte", images, compress)
        _write_idx(directory / f"{split}-labels-idx1-ubyte", labels, compress)
    return directory


def _paper_photo(digit: np.ndarray, size=(480, 640), frac=0.5, ink=(40, 40, 40), paper=(225, 230, 235),
                centre=(0.5, 0.5), seed=0, gradient=0.3, noise=4.0) -> np.ndarray:
    """A BGR 'photo': an MNIST digit (uint8 28x28, light on dark) drawn in
    ``ink`` on ``paper`` under a light gradient, with sensor noise."""
    h, w = size
    dh = int(frac * h)
    alpha = cv2.resize(digit.astype(np.float32) / 255, (dh, dh), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    layer = np.zeros((h, w), np.float32)
    y0, x0 = int(centre[1] * h) - dh // 2, int(centre[0] * w) - dh // 2
    layer[y0:y0 + dh, x0:x0 + dh] = alpha
    layer = cv2.merge([layer] * 3)
    light = cv2.merge([np.repeat((1.0 - gradient * np.linspace(0, 1, w, dtype=np.float32))[None, :], h, 0)] * 3)
    img = (np.float32(paper) * (1 - layer) + np.float32(ink) * layer) * light
    cv2.setRNGSeed(seed)
    grain = np.empty_like(img)
    cv2.randn(grain, 0.0, noise)
    return np.clip(img + grain, 0, 255).astype(np.uint8)


def _encode(image: np.ndarray, ext: str, params=()) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return buf.tobytes()


def _small_config(out, data_dir, **overrides):
    from train.config import TrainConfig

    settings = dict(data_dir=str(data_dir), download=False, train_subset=3000, val_size=1000,
                    epochs=2, batch_size=100, eval_interval=10, out_dir=str(out), augment=True)
    return TrainConfig.from_recipe("fast", **{**settings, **overrides})


@contextlib.contextmanager
def _serve(*args: str, timeout: float = 60.0):
    """Start the server (benchmarks.serve_load.launch), yield its base URL, stop it afterwards."""
    from benchmarks.serve_load import launch, stop_server

    proc, port = launch(list(args), timeout)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(proc)


def _post(url: str, data: bytes, content_type: str = "application/octet-stream", timeout: float = 30.0,
         headers: dict | None = None) -> tuple[int, dict, email.message.Message]:
    """POST raw bytes: (status, JSON body, headers); error statuses too."""
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        body = e.read()
        return e.code, json.loads(body), e.headers


def _multipart(field: str, filename: str, data: bytes, content_type: str = "image/jpeg") -> tuple[bytes, str]:
    boundary = "edge-digits-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _number_photo(digits: list[np.ndarray], size=(480, 640), height: int = 120, gap: int = 24,
                 ink=(50, 40, 30), paper=(215, 225, 232), seed: int = 0) -> np.ndarray:
    """A clean BGR photo of MNIST digits written in a row on paper (the
    number reader's easy case: separate digits, even light), for tests that
    need a reading that survives the browser's JPEG re-encoding."""
    h, w = size
    alpha = np.zeros((h, w), np.float32)
    total = len(digits) * height + (len(digits) - 1) * gap
    x, y = (w - total) // 2, (h - height) // 2
    for d in digits:
        alpha[y:y + height, x:x + height] = cv2.resize(d.astype(np.float32) / 255, (height, height),
                                                       interpolation=cv2.INTER_CUBIC).clip(0, 1)
        x += height + gap
    layer = cv2.merge([alpha] * 3)
    img = np.float32(paper) * (1 - layer) + np.float32(ink) * layer
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def _cli_json(*args: str) -> list[dict]:
    """``python -m runtime classify --json ...``: one object per line."""
    out = subprocess.run([sys.executable, "-m", "runtime", "classify", "--json", *args], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def small_config():
    """small_config(out, data_dir, **overrides) -> TrainConfig: the fast recipe, two short epochs on 3,000 images."""
    return _small_config


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The classifier the tests use: the shipped INT8 one, or $EDGE_DIGITS_MODEL."""
    return MODEL


@pytest.fixture(scope="session")
def model_args() -> list[str]:
    """Command-line flags that make `python -m runtime` use model_path (none for the shipped one)."""
    return ["--model", str(MODEL)] if MODEL != SHIPPED_MODEL else []


@pytest.fixture(scope="session")
def paper_photo():
    """paper_photo(digit, size=(480, 640), frac=0.5, ink=..., paper=..., centre=..., seed=0, ...) -> BGR photo."""
    return _paper_photo


@pytest.fixture(scope="session")
def encode():
    """encode(image, ".jpg", params=()) -> the encoded bytes."""
    return _encode


@pytest.fixture(scope="session")
def write_idx():
    """write_idx(path, array, compress=False) -> path: one IDX file (``.gz`` appended when compressed)."""
    return _write_idx


@pytest.fixture(scope="session")
def write_dataset():
    """write_dataset(directory, n_train=600, n_test=200, seed=0, compress=False) -> directory: four IDX files."""
    return _write_dataset


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """MNIST where every command finds it (train.idx.resolve_data_dir, never downloading); skipped without it."""
    from train.idx import DataError, resolve_data_dir

    try:
        return resolve_data_dir(None).resolve()
    except DataError as e:
        pytest.skip(f"needs MNIST: {e}")


@pytest.fixture(scope="session")
def mnist_test(mnist_dir) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST test split (images uint8 [N, 28, 28], labels)."""
    from train.idx import load_split

    return load_split(mnist_dir, "test")


@pytest.fixture(scope="session")
def serve():
    """serve(*server_args, timeout=60.0): context manager that starts ``python -m runtime serve`` on a free port,
    waits until /v1/health answers and yields its base URL; stops it afterwards."""
    return _serve


@pytest.fixture(scope="session")
def http():
    """http.post(url, data, content_type, timeout, headers) -> (status, JSON, headers); http.get(url) -> (status,
    bytes); http.multipart(field, filename, data, content_type) -> (body, content type)."""
    return SimpleNamespace(post=_post, get=_get, multipart=_multipart)


@pytest.fixture(scope="session")
def number_photo():
    """number_photo(digits, size=(480, 640), height=120, gap=24, ...) -> BGR photo of MNIST digits in a row."""
    return _number_photo


@pytest.fixture(scope="session")
def cli_json():
    """cli_json(*args) -> the objects ``python -m runtime classify --json ARGS`` prints, one per line."""
    return _cli_json
