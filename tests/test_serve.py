"""``python -m runtime serve``: the HTTP API, tested against the real server
process on a free localhost port (HTTP over a socket, as clients see it)."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

for _extra in ("starlette", "uvicorn", "python_multipart", "prometheus_client"):
    pytest.importorskip(_extra, reason="the serve extra is not installed (pip install -e '.[serve]')")


from benchmarks.serve_load import chunked_upload  # noqa: E402

pytestmark = pytest.mark.needs_model

REPO = Path(__file__).resolve().parents[1]

BODY_LIMIT = 3_000_000
PIXEL_LIMIT = 8_000_000


@pytest.fixture(scope="module")
def server(serve):
    with serve("--workers", "2", "--max-queue", "64", "--max-body", str(BODY_LIMIT), "--max-pixels", str(PIXEL_LIMIT),
               "--read-timeout", "1.5") as url:
        yield url


@pytest.fixture(scope="module")
def photos(tmp_path_factory, mnist_test, paper_photo, encode, number_photo, cli_json):
    """Digit photos (JPEG, PNG) and number photos, with what the CLI reads
    from the same files: the server must answer the same."""
    images, labels = mnist_test
    root = tmp_path_factory.mktemp("serve-photos")
    digit_files, number_files = [], []
    for i, ext in enumerate([".jpg", ".png", ".jpg", ".webp"]):
        path = root / f"digit{i}{ext}"
        path.write_bytes(encode(paper_photo(images[i], seed=i), ext))
        digit_files.append((path, str(labels[i])))
    for j, idx in enumerate([[0, 1, 2], [3, 4, 5, 6]]):
        path = root / f"number{j}.jpg"
        path.write_bytes(encode(number_photo([images[k] for k in idx], seed=j), ".jpg"))
        number_files.append((path, "".join(str(labels[k]) for k in idx)))
    digits = {o["path"]: o for o in cli_json(*[str(p) for p, _ in digit_files])}
    numbers = {o["path"]: o for o in cli_json("--number", *[str(p) for p, _ in digit_files + number_files])}
    return {"digit": [(p, label, digits[str(p)]) for p, label in digit_files],
            "number": [(p, label, numbers[str(p)]) for p, label in digit_files + number_files]}


def strip_path(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k != "path"}


def test_health_names_models_precision_providers_versions(server, http):
    status, body = http.get(server + "/v1/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok"
    assert health["precision"] == "int8" and health["models"]["digit"]["path"].endswith("digits-int8.onnx")
    assert "CPUExecutionProvider" in health["providers"]
    assert {"onnxruntime", "numpy", "starlette", "uvicorn", "python"} <= set(health["versions"])
    assert health["limits"]["max_body_bytes"] == BODY_LIMIT


def test_page_and_openapi_are_served(server, http):
    status, page = http.get(server + "/")
    assert status == 200 and b"/static/app.js" in page
    assert http.get(server + "/static/app.js")[0] == 200
    status, doc = http.get(server + "/openapi.json")
    spec = json.loads(doc)
    assert status == 200 and {"/v1/digit", "/v1/number", "/v1/health", "/metrics"} <= set(spec["paths"])

    def refs(node):
        if isinstance(node, dict):
            yield from ([node["$ref"]] if "$ref" in node else [])
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    for ref in refs(spec):  # every reference points at something in the document
        target = spec
        for key in ref.removeprefix("#/").split("/"):
            target = target[key]


def test_digit_answers_equal_the_cli(server, photos, http):
    for path, label, expected in photos["digit"]:
        status, body, headers = http.post(server + "/v1/digit", path.read_bytes(), "image/jpeg")
        assert status == 200, body
        assert body == strip_path(expected) and body["digit"] == label, path
        assert re.fullmatch(r"queue;dur=[\d.]+, read;dur=[\d.]+", headers["Server-Timing"])
        status, boxed, _ = http.post(server + "/v1/digit?boxes=1", path.read_bytes())
        x, y, w, h = boxed["box"]
        assert w > 0 and h > 0 and {k: boxed[k] for k in expected if k != "path"} == strip_path(expected)


def test_a_small_digit_in_a_big_upload_is_found_as_in_the_file(server, mnist_test, paper_photo, encode, http):
    """A digit 3% of a 3200x2400 page: the upload, decoded at 1/8 for single digits, is decoded again with more
    pixels for the finer look, as the command line decodes the file again; the box stays in the first pixels."""
    images, labels = mnist_test
    data = encode(paper_photo(images[0], size=(2400, 3200), frac=0.03, centre=(0.7, 0.3), gradient=0.1), ".jpg")
    status, body, headers = http.post(server + "/v1/digit?boxes=1", data, "image/jpeg")
    assert status == 200 and body["digit"] == str(labels[0]), body
    assert headers["X-Image-Size"] == "400x300"
    x, y, w, h = body["box"]
    assert abs(x + w / 2 - 280) < 5 and abs(y + h / 2 - 90) < 5


def test_number_answers_equal_the_cli_raw_and_multipart(server, photos, http):
    for path, _label, expected in photos["number"]:
        status, body, headers = http.post(server + "/v1/number", path.read_bytes())
        assert status == 200 and body == strip_path(expected), path
        form, ctype = http.multipart("image", path.name, path.read_bytes())
        status, body, _ = http.post(server + "/v1/number", form, ctype)
        assert status == 200 and body == {**strip_path(expected), "path": path.name}
    # the clean rows are read right, not only the same
    assert [e["number"] for _, _, e in photos["number"][-2:]] == [label for _, label, _ in photos["number"][-2:]]


def test_concurrent_requests_all_answered_right(server, photos, http):
    jobs = [(kind, path, expected) for kind in ("digit", "number") for path, _, expected in photos[kind]] * 4

    def one(job):
        kind, path, expected = job
        return http.post(f"{server}/v1/{kind}", path.read_bytes())[:2], strip_path(expected)

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(one, jobs))
    assert len(answers) == len(jobs)
    for (status, body), expected in answers:
        assert status == 200 and body == expected


@pytest.mark.parametrize("case", ["text", "pdf", "empty", "truncated", "corrupt", "bomb", "too_many_pixels", "blank",
                                  "tiny", "form_without_file"])
def test_bad_requests_get_clear_json_errors(server, case, mnist_test, paper_photo, encode, http):
    images, _ = mnist_test
    good = encode(paper_photo(images[0]), ".jpg")
    png_header = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    data, ctype = {
        "text": (b"hello, I am not an image", "text/plain"),
        "pdf": (b"%PDF-1.4\n" + b"x" * 1000, "application/pdf"),
        "empty": (b"", "image/jpeg"),
        "truncated": (good[: len(good) // 2], "image/jpeg"),
        "corrupt": (good[:200] + bytes(2000) + good[-200:], "image/jpeg"),
        "bomb": (png_header + (90000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00" + b"\x00" * 20, "image/png"),
        "too_many_pixels": (encode(np.full((3000, 3000), 200, np.uint8), ".png"), "image/png"),
        "blank": (encode(np.full((480, 640, 3), 215, np.uint8), ".png"), "image/png"),
        "tiny": (encode(np.zeros((4, 4), np.uint8), ".png"), "image/png"),
        "form_without_file": (b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--\r\n",
                              "multipart/form-data; boundary=b"),
    }[case]
    want, words = {
        "text": (415, "not an image"), "pdf": (415, "not an image"), "empty": (400, "empty"),
        "truncated": (400, "truncated"), "corrupt": (400, "unreadable"), "bomb": (413, "too large"),
        "too_many_pixels": (413, "too large"), "blank": (422, "no digit"),
        "tiny": (422, "too small"), "form_without_file": (400, "no file"),
    }[case]
    for endpoint in ("/v1/digit", "/v1/number"):
        status, body, _ = http.post(server + endpoint, data, ctype)
        assert status == want and body["status"] == want, (case, body)
        if case == "blank" and endpoint == "/v1/number":
            words = "no number found"
        assert words in body["error"] and "Traceback" not in body["error"], body


def test_unknown_routes_and_methods_answer_json(server, http):
    status, body = http.get(server + "/v1/nothing")
    assert status == 404 and "error" in json.loads(body)
    status, body = http.get(server + "/v1/digit")
    assert status == 405 and "error" in json.loads(body)


def raw_request(port: int, head: bytes, body_parts: list[bytes], pause: float = 0.0) -> bytes:
    """Send a request by hand over a socket (to misbehave as clients do);
    returns whatever the server answered before closing (b"" if nothing)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        for part in body_parts:
            time.sleep(pause)
            s.sendall(part)
        return read_all(s)


def read_all(s: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := s.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def test_oversized_bodies_are_refused_without_reading_them(server):
    """413 as soon as the declared length is over the limit, and, for a
    chunked upload of unknown length, as soon as the bytes received are."""
    port = int(server.rsplit(":", 1)[1])
    declared = raw_request(port, (f"POST /v1/digit HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                                  f"Content-Length: {BODY_LIMIT + 1}\r\nConnection: close\r\n\r\n").encode(), [])
    assert declared.startswith(b"HTTP/1.1 413 ") and b"body too large" in declared
    answer = chunked_upload(port, BODY_LIMIT + 65536, "/v1/number", timeout=10)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"body too large" in answer


def test_truncated_and_slow_uploads_do_not_stop_the_others(server, photos, http):
    port = int(server.rsplit(":", 1)[1])
    path, _, expected = photos["digit"][0]
    data = path.read_bytes()
    head = (f"POST /v1/digit HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    results = {}

    def slow():  # a third of the body, then nothing until the server's read timeout (1.5 s) has passed
        results["slow"] = raw_request(port, head, [data[: len(data) // 3]], pause=0.0)

    def truncated():  # half the body, then the client hangs up
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(head + data[: len(data) // 2])
        results["truncated"] = True

    threads = [threading.Thread(target=slow), threading.Thread(target=truncated)]
    for t in threads:
        t.start()
    # meanwhile, ordinary clients are served
    served = [http.post(server + "/v1/digit", data)[:2] for _ in range(5)]
    for t in threads:
        t.join(15)
    assert all(status == 200 and body == strip_path(expected) for status, body in served)
    assert b" 408 " in results["slow"].split(b"\r\n", 1)[0] and b"not received within" in results["slow"]
    assert http.post(server + "/v1/digit", data)[:2] == (200, strip_path(expected))


def test_metrics_count_requests_errors_and_latency(server, photos, http):
    path = photos["digit"][0][0]
    http.post(server + "/v1/digit", path.read_bytes())
    http.post(server + "/v1/digit", b"not an image at all")
    status, text = http.get(server + "/metrics")
    text = text.decode()
    assert status == 200

    def value(line_start: str) -> float:
        return float(next(line for line in text.splitlines() if line.startswith(line_start)).rsplit(" ", 1)[1])

    assert value('edge_digits_requests_total{endpoint="/v1/digit",status="200"}') >= 1
    assert value('edge_digits_errors_total{endpoint="/v1/digit",kind="not_image"}') >= 1
    count = value('edge_digits_request_seconds_count{endpoint="/v1/digit"}')
    assert value('edge_digits_request_seconds_bucket{endpoint="/v1/digit",le="+Inf"}') == count >= 2
    assert value("process_resident_memory_bytes") > 0


def test_overload_is_refused_with_503_and_the_rest_are_served(photos, serve, http):
    """One worker, a queue of one: a burst of 16 gets some 503s (with
    Retry-After), and every request that was admitted is answered right."""
    path, _, expected = photos["number"][-1]
    data = path.read_bytes()
    with serve("--workers", "1", "--max-queue", "1") as url:
        barrier = threading.Barrier(16)

        def one(_):
            barrier.wait()
            return http.post(url + "/v1/number", data)

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(one, range(16)))
        statuses = sorted(a[0] for a in answers)
        assert set(statuses) == {200, 503}, statuses
        for status, body, headers in answers:
            if status == 200:
                assert body == strip_path(expected)
            else:
                assert "busy" in body["error"] and headers["Retry-After"] == "1"
        assert http.post(url + "/v1/number", data)[:2] == (200, strip_path(expected))


def test_reader_option_is_passed_on_or_refused_clearly(tmp_path):
    """A --reader file that is no model ends the command at start, with one line and status 2."""
    bogus = tmp_path / "reader.onnx"
    bogus.write_bytes(b"not a model")
    out = subprocess.run([sys.executable, "-m", "runtime", "serve", "--port", "0", "--reader", str(bogus)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("error:") and "Traceback" not in out.stderr
    assert "reader" in out.stderr


def test_the_service_does_not_import_torch():
    """The server is runtime code: building the app with its models must not pull in torch."""
    code = ("import importlib.abc, sys\n"
            "class NoTorch(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch' or name.startswith('torch.'):\n"
            "            raise ImportError('the service must not import torch (' + name + ')')\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            "from runtime.serve import Reader, create_app\n"
            "create_app(Reader())\n"
            "print('NO_TORCH' if not any(m == 'torch' or m.startswith('torch.') for m in sys.modules) else 'TORCH')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["NO_TORCH"], out.stderr


def test_a_taken_port_is_one_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "runtime", "serve", "--port", str(port)], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
