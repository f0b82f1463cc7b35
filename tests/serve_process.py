"""A real ``python -m runtime serve`` process on a free localhost port, and
the test photos the serve tests share (their expected readings are known)."""
from __future__ import annotations

import contextlib
import email.message
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np

from benchmarks.serve_load import free_port

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def serve(*args: str, timeout: float = 60.0):
    """Start the server, wait until /v1/health answers, yield its base URL;
    stop it afterwards (and show its output if it died early)."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "runtime", "serve", "--port", str(port), *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{proc.stdout.read()}")
            try:
                with urllib.request.urlopen(url + "/v1/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer on {url} within {timeout} s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def post(url: str, data: bytes, content_type: str = "application/octet-stream", timeout: float = 30.0,
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


def multipart(field: str, filename: str, data: bytes, content_type: str = "image/jpeg") -> tuple[bytes, str]:
    boundary = "edge-digits-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def number_photo(digits: list[np.ndarray], size=(480, 640), height: int = 120, gap: int = 24,
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


def cli_json(*args: str) -> list[dict]:
    """``python -m runtime classify --json ...``: one object per line."""
    out = subprocess.run([sys.executable, "-m", "runtime", "classify", "--json", *args], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
