"""``python -m runtime serve``: digit reading as a local HTTP service.

A small Starlette app on uvicorn (the ``serve`` extra). The models are
loaded once; each request's decoding and inference run on a bounded pool
of worker threads, never on the event loop, so a slow image does not stall
the other connections. Requests beyond the pool and its queue are refused
at once with 503 instead of piling up.

The runtime is used only through its public API (``DigitClassifier``,
``decode_upload`` and the typed errors), so a change of number reader
behind ``read_number`` needs no change here. The API is described in
docs/HTTP.md; the page at ``/`` lives in runtime/static/.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import platform
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import DigitClassifier, NoDigitFound, RuntimeInputError, Upload, decode_upload
from .results import digit_json, number_json

log = logging.getLogger("runtime.serve")
STATIC = Path(__file__).resolve().parent / "static"
API_DOC = STATIC / "openapi.json"

# Leading bytes of the image formats OpenCV decodes. Anything else is
# answered 415 (not an image) before a decoder sees it; a file that starts
# like an image but does not decode is 400 (unreadable).
SIGNATURES = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"BM",  # BMP
    b"II*\x00", b"MM\x00*",  # TIFF
    b"#?RADIANCE", b"#?RGBE",  # HDR
    b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51",  # JPEG 2000
    b"\x59\xa6\x6a\x95",  # Sun raster
    b"v/1\x01",  # OpenEXR
    b"GIF87a", b"GIF89a",
)


def looks_like_image(data: bytes) -> bool:
    if data.startswith(SIGNATURES):
        return True
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    # PNM: P1..P7 then whitespace
    return len(data) > 2 and data[0:1] == b"P" and data[1:2] in b"1234567" and data[2:3].isspace()


def image_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header, before any pixel is decoded, so
    that a decompression bomb is refused without allocating it. The reader
    is the runtime's own (runtime.imageio.sniff_dimensions); None when the
    format's header is not read there (the size is then checked after
    decoding, which the runtime itself caps)."""
    try:
        from .imageio import sniff_dimensions
    except ImportError:  # the helper moved: fall back to the check after decoding
        return None
    return sniff_dimensions(data)


# ------------------------------------------------------------ settings and errors


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 20 * 2**20  # a 12 MP phone JPEG is 3-8 MiB
    max_pixels: int = 50_000_000  # a 48 MP phone photo still passes
    workers: int = 2  # threads that decode and classify
    max_queue: int = 32  # requests waiting for a worker; more are refused (503)
    read_timeout_s: float = 30.0  # a body not received by then is dropped (408)


class Problem(Exception):
    """An answer other than 200: status, a short kind (metrics label) and one clear line."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def problem_response(p: Problem) -> JSONResponse:
    headers = {}
    if p.status == 503:
        headers["Retry-After"] = "1"
    if p.status in (408, 413):
        # The body was not read to its end: the connection cannot carry another request.
        headers["Connection"] = "close"
    return JSONResponse({"error": p.message, "kind": p.kind, "status": p.status}, status_code=p.status,
                        headers=headers)


# ------------------------------------------------------------ the models


class Reader:
    """The loaded models and the work a worker thread does for one image."""

    def __init__(self, model: str | None = None, reader: str | None = None, threads: int = 1):
        self.classifier = DigitClassifier(model, threads=threads, reader=reader)
        self.classifier.reader  # noqa: B018  both models load now: a bad --reader fails at start, not mid-request

    def describe(self) -> dict:
        info, reader = self.classifier.info, self.classifier.reader.info
        return {
            "digit": {"path": str(info.path), "precision": info.precision, "classes": list(info.classes),
                      "input_size": info.input_size},
            "number_reader": {"path": str(reader.path), "precision": reader.precision,
                              "input_height": reader.input_size},
        }

    def check(self, data: bytes, limits: Limits) -> None:
        """The checks that need no decoding (microseconds, done on the event
        loop before a worker is taken): empty, not an image, too many pixels."""
        if not data:
            raise Problem(400, "empty", "empty body: send the image as the request body or as a multipart file")
        if not looks_like_image(data):
            raise Problem(415, "not_image", "not an image (expected JPEG, PNG, BMP, WebP, TIFF or PNM data)")
        dims = image_dimensions(data)
        if dims is not None:
            self._check_pixels(*dims, limits)

    def read(self, data: bytes, number: bool, boxes: bool, limits: Limits) -> tuple[dict, tuple[int, int]]:
        """Decode and classify one checked upload (runs on a worker thread):
        the JSON object and the (width, height) the image was decoded at,
        which the boxes refer to (large JPEGs are decoded reduced)."""
        try:
            image = decode_upload(data, number)  # as the command line decodes the same file
        except RuntimeInputError as e:
            raise decode_problem(e) from None
        except MemoryError:
            raise Problem(413, "too_large", "image too large for the memory available") from None
        size = image.shape[1], image.shape[0]
        self._check_pixels(*size, limits)
        try:
            if number:
                return number_json(self.classifier.read_number(image)), size
            return digit_json(self.classifier.classify_one(Upload(data, image)), boxes), size
        except NoDigitFound as e:
            raise Problem(422, "no_digit", str(e)) from None
        except RuntimeInputError as e:
            raise Problem(422, "unusable", str(e)) from None

    @staticmethod
    def _check_pixels(w: int, h: int, limits: Limits) -> None:
        if w * h > limits.max_pixels:
            raise Problem(413, "too_large", f"image too large: {w}x{h} = {w * h / 1e6:.1f} MP, "
                                            f"limit {limits.max_pixels / 1e6:g} MP")


def decode_problem(e: RuntimeInputError) -> Problem:
    """The answer for an image the runtime would not decode. Its errors
    are one type with a message, so the message tells a decoded image that
    is unusable (422) or too large (413) from data that is no image (400)."""
    text = str(e)
    if "too large" in text:  # the runtime's own cap on pixels
        return Problem(413, "too_large", text)
    if "too small" in text or "zero size" in text:
        return Problem(422, "unusable", text)
    return Problem(400, "unreadable", f"unreadable image: {text}")


# ------------------------------------------------------------ metrics


class Metrics:
    """Prometheus metrics in a registry of this app's own (several apps
    in one process, as in tests, do not collide)."""

    BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)

    def __init__(self):
        disable_created_metrics()  # the *_created series only double the page
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("edge_digits_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.errors = Counter("edge_digits_errors", "Requests that failed, by kind", ["endpoint", "kind"], registry=r)
        self.latency = Histogram("edge_digits_request_seconds", "Time from request to answer (reading endpoints)",
                                 ["endpoint"], buckets=self.BUCKETS, registry=r)
        self.in_flight = Gauge("edge_digits_in_flight", "Reading requests admitted (running or queued)", registry=r)
        ProcessCollector(registry=r)  # resident memory, CPU seconds, open files

    def render(self) -> bytes:
        return generate_latest(self.registry)


# ------------------------------------------------------------ the app


class Service:
    def __init__(self, reader: Reader, limits: Limits):
        self.reader, self.limits = reader, limits
        self.pool = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="edge-digits-worker")
        self.admitted = 0  # running or waiting for a worker; only touched on the event loop
        self.metrics = Metrics()
        self.started = time.time()

    async def body(self, request: Request) -> tuple[bytes, str | None]:
        """The image bytes (raw body or the multipart file) and its file name."""
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise Problem(413, "too_large", f"body too large: {int(declared)} bytes, limit {limit} bytes")
        try:
            data = await asyncio.wait_for(_read_limited(request, limit), self.limits.read_timeout_s)
        except asyncio.TimeoutError:
            raise Problem(408, "timeout",
                          f"request body not received within {self.limits.read_timeout_s:g} s") from None
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            return await _multipart_file(request, data, limit)
        return data, None

    async def read(self, request: Request, number: bool) -> Response:
        endpoint = "/v1/number" if number else "/v1/digit"
        start = time.perf_counter()
        try:
            data, name = await self.body(request)
            boxes = request.query_params.get("boxes", "0").lower() in ("1", "true", "yes")
            self.reader.check(data, self.limits)
            if self.admitted >= self.limits.workers + self.limits.max_queue:
                raise Problem(503, "overloaded", f"server busy ({self.admitted} requests in progress); retry shortly")
            self.admitted += 1
            self.metrics.in_flight.inc()
            try:
                loop = asyncio.get_running_loop()
                queued = time.perf_counter()
                obj, (w, h), began, ended = await loop.run_in_executor(self.pool, self._timed_read, data, number,
                                                                       boxes)
            finally:
                self.admitted -= 1
                self.metrics.in_flight.dec()
            if name:
                obj = {"path": name, **obj}
            timing = f"queue;dur={(began - queued) * 1000:.1f}, read;dur={(ended - began) * 1000:.1f}"
            response = JSONResponse(obj, headers={"Server-Timing": timing, "X-Image-Size": f"{w}x{h}"})
        except Problem as p:
            response = problem_response(p)
            self.metrics.errors.labels(endpoint, p.kind).inc()
        except ClientDisconnect:
            # The client went away mid-upload (truncated body): nobody to answer.
            self.metrics.errors.labels(endpoint, "disconnect").inc()
            self.metrics.requests.labels(endpoint, "499").inc()
            return Response(status_code=400)
        except Exception:  # a bug: logged here with its traceback, never sent to the client
            log.exception("internal error on %s", endpoint)
            response = problem_response(Problem(500, "internal", "internal error (logged by the server)"))
            self.metrics.errors.labels(endpoint, "internal").inc()
        self.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    def _timed_read(self, data: bytes, number: bool, boxes: bool):
        """Reader.read on a worker thread, with when it began and ended
        (the wait for a worker and the work are reported apart)."""
        began = time.perf_counter()
        obj, size = self.reader.read(data, number, boxes, self.limits)
        return obj, size, began, time.perf_counter()

    def health(self) -> dict:
        clf = self.reader.classifier
        return {"status": "ok", "models": self.reader.describe(), "precision": clf.info.precision,
                "providers": clf.providers, "versions": dict(versions()), "limits": asdict(self.limits),
                "in_flight": self.admitted, "uptime_s": round(time.time() - self.started, 1)}


async def _read_limited(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, "too_large", f"body too large: over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _multipart_file(request: Request, data: bytes, limit: int) -> tuple[bytes, str | None]:
    async def once():
        yield data

    try:
        form = await MultiPartParser(request.headers, once(), max_files=4, max_fields=16, max_part_size=limit).parse()
    except MultiPartException as e:
        raise Problem(400, "bad_form", f"malformed multipart form: {e.message}") from None
    try:
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            upload = next((v for _, v in form.multi_items() if not isinstance(v, str)), None)
        if upload is None:
            raise Problem(400, "bad_form", "no file in the form: send the image as a file field named 'image'")
        return await upload.read(), upload.filename
    finally:
        await form.close()


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """Library versions (looked up once: package metadata reads are slow)."""
    out = {"python": platform.python_version()}
    for dist in ("edge-digits", "onnxruntime", "onnxruntime-gpu", "opencv-python-headless", "numpy", "starlette",
                 "uvicorn"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    out["numpy"] = np.__version__
    return out


def create_app(reader: Reader, limits: Limits = Limits()) -> Starlette:
    service = Service(reader, limits)

    async def digit(request: Request) -> Response:
        return await service.read(request, number=False)

    async def number(request: Request) -> Response:
        return await service.read(request, number=True)

    async def health(request: Request) -> Response:
        return JSONResponse(service.health())

    async def metrics(request: Request) -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def openapi(request: Request) -> Response:
        return Response(API_DOC.read_bytes(), media_type="application/json")

    async def http_error(request: Request, exc: HTTPException) -> Response:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http")
        return problem_response(Problem(exc.status_code, kind, f"{request.method} {request.url.path}: {exc.detail}"))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("internal error on %s", request.url.path, exc_info=exc)
        return problem_response(Problem(500, "internal", "internal error (logged by the server)"))

    routes = [
        Route("/", page),
        Route("/v1/digit", digit, methods=["POST"]),
        Route("/v1/number", number, methods=["POST"]),
        Route("/v1/health", health),
        Route("/metrics", metrics),
        Route("/openapi.json", openapi),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        service.pool.shutdown(wait=False, cancel_futures=True)

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error},
                    lifespan=lifespan)
    app.state.service = service
    return app


def run(args) -> None:
    """Load the models, then serve until interrupted (called by runtime.cli)."""
    import cv2
    import uvicorn

    # Requests run side by side on the workers; OpenCV splitting each call
    # over the cores as well only adds hand-offs (about 8% more CPU per request).
    cv2.setNumThreads(1)
    # python-multipart logs each malformed form it meets; the client's 400 says it already.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    logging.getLogger("multipart").setLevel(logging.ERROR)
    limits = Limits(max_body_bytes=args.max_body, max_pixels=args.max_pixels, workers=args.workers,
                    max_queue=args.max_queue, read_timeout_s=args.read_timeout)
    reader = Reader(args.model, args.reader, threads=args.threads)
    app = create_app(reader, limits)
    sock = listen(args.host, args.port)
    host, port = sock.getsockname()[:2]
    scheme = "https" if args.tls_cert else "http"
    print(f"serving on {scheme}://{_url_host(host)}:{port} ({limits.workers} workers, "
          f"{reader.classifier.info.precision} model; Ctrl-C stops)", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, ssl_certfile=args.tls_cert,
                            ssl_keyfile=args.tls_key, timeout_keep_alive=5, server_header=False)
    uvicorn.Server(config).run(sockets=[sock])


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a taken port or a wrong
    address is one clear error (OSError) before anything is served."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise OSError(f"cannot listen on {host}:{port}: unknown address ({e.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
