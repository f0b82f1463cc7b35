"""Hostile-input campaign against every entry point of the runtime.

    python -m benchmarks.fuzz [--count 10000] [--seed 0] [--modes digit number api webcam]
                              [--rlimit-mb 1536] [--time-limit 900] [--keep DIR]

Generates a corpus of ``--count`` hostile files (mutated PNG/JPEG/TIFF/BMP/
WebP/PNM files, random bytes behind real magic numbers, forged headers,
decompression bombs, special files: FIFOs, links to /dev/zero, sockets,
directories named like images, dangling links, odd file names), then runs
``python -m runtime classify --json`` (digit and ``--number``), the Python
API and ``webcam`` over it. Every run is a subprocess with an address-space
limit (``resource.setrlimit(RLIMIT_AS)``), so a memory regression fails
instead of swapping, and a timeout, so a hang is counted instead of waited
for. It counts crashes (a traceback, a signal, an unexpected exit status),
hangs, inputs without exactly one JSON line, and the peak RSS of each run
(a run's peak bounds that of each input in it; runs over the floor are
re-run one input at a time to name the input).

Floors: 0 hangs, 0 crashes, exactly one JSON line per input, peak
RSS <= 512 MB for any single input at default settings.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
FLOOR_RSS_MB = 512
DEFAULT_RLIMIT_MB = 1536  # address space, not RSS: mapped libraries and thread stacks count too


# ------------------------------------------------------------ the corpus


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int, height: int, depth: int, colour_type: int, real_idat: bool = True) -> bytes:
    """A valid PNG of one colour at any size: deflate packs a zero row
    (~1000:1), so 12000x12000 RGBA16 is about 1 MB. ``real_idat=False``
    writes a token IDAT (refused before decoding anyway; fast to make)."""
    samples = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    row = b"\0" * (1 + width * samples * depth // 8)
    comp = zlib.compressobj(9)
    idat = (b"".join(comp.compress(row) for _ in range(height)) + comp.flush()) if real_idat else zlib.compress(row)
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def digit_photo(rng: np.random.Generator, size: int = 160) -> np.ndarray:
    """A small photo-like image of one printed digit (BGR uint8)."""
    img = np.full((size, size, 3), rng.integers(180, 250), np.uint8)
    cv2.putText(img, str(int(rng.integers(10))), (size // 5, size * 4 // 5), cv2.FONT_HERSHEY_SIMPLEX,
                size / 40, tuple(int(v) for v in rng.integers(0, 80, 3)), max(2, size // 20))
    noise = rng.normal(0, 6, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def seeds(rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """Valid files of every accepted format and flavour: what mutations start from."""
    img = digit_photo(rng)
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    row = cv2.hconcat([digit_photo(rng, 120) for _ in range(4)])
    out = [
        (".png", cv2.imencode(".png", img)[1]), (".png", cv2.imencode(".png", grey)[1]),
        (".png", cv2.imencode(".png", grey.astype(np.uint16) * 257)[1]),
        (".png", cv2.imencode(".png", np.dstack([img, np.full(grey.shape, 255, np.uint8)]))[1]),
        (".jpg", cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]),
        (".jpg", cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1]),
        (".jpg", cv2.imencode(".jpg", row)[1]),
        (".tif", cv2.imencode(".tif", img)[1]), (".tif", cv2.imencode(".tif", grey.astype(np.float32) / 255)[1]),
        (".bmp", cv2.imencode(".bmp", img)[1]), (".bmp", cv2.imencode(".bmp", grey)[1]),
        (".webp", cv2.imencode(".webp", img)[1]),
        (".webp", cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 101])[1]),
        (".pgm", cv2.imencode(".pgm", grey)[1]), (".ppm", cv2.imencode(".ppm", img)[1]),
        (".pbm", cv2.imencode(".pbm", (grey > 128).astype(np.uint8) * 255)[1]),
    ]
    return [(ext, data.tobytes()) for ext, data in out]


def mutate(rng: np.random.Generator, data: bytes) -> tuple[str, bytes]:
    """One random mutation of a valid file, named for what it did."""
    d = bytearray(data)
    kind = str(rng.choice(["flip", "bytes", "truncate", "insert", "duplicate", "header", "zero-tail"]))
    if kind == "flip":
        for _ in range(int(rng.integers(1, 9))):
            d[int(rng.integers(len(d)))] ^= 1 << int(rng.integers(8))
    elif kind == "bytes":
        for _ in range(int(rng.integers(1, 5))):
            d[int(rng.integers(len(d)))] = int(rng.choice([0, 0x7F, 0x80, 0xFF]))
    elif kind == "truncate":
        d = d[: int(rng.integers(1, len(d)))]
    elif kind == "insert":
        at = int(rng.integers(len(d)))
        d[at:at] = rng.bytes(int(rng.integers(1, 64)))
    elif kind == "duplicate":
        a = int(rng.integers(len(d)))
        b = min(len(d), a + int(rng.integers(1, 256)))
        d[b:b] = d[a:b]
    elif kind == "header":  # the first 64 bytes hold the sizes of most formats
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(min(64, len(d) - 4)))
            d[at:at + 4] = struct.pack(">I", int(rng.choice([0, 1, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 60000])))
    else:
        cut = int(rng.integers(len(d) // 2, len(d)))
        d[cut:] = bytes(len(d) - cut)
    return kind, bytes(d)


def bombs() -> list[tuple[str, bytes]]:
    """The issue's bombs and their relatives (name, bytes)."""
    jpeg = bytearray(cv2.imencode(".jpg", np.full((240, 200, 3), 200, np.uint8))[1].tobytes())
    k = jpeg.find(b"\xff\xc0")
    jpeg[k + 5:k + 9] = struct.pack(">HH", 7000, 20000)
    flipped = bytearray(cv2.imencode(".png", digit_photo(np.random.default_rng(1)))[1].tobytes())
    at = flipped.find(b"IDAT") - 4
    flipped[at] ^= 0x40
    out = [
        ("bomb-png16-rgba-12000.png", png_bomb(12000, 12000, 16, 6)),
        ("bomb-png8-grey-12000.png", png_bomb(12000, 12000, 8, 0)),
        ("bomb-png8-rgb-9000.png", png_bomb(9000, 9000, 8, 2)),
        ("bomb-png-60000.png", png_bomb(60000, 60000, 8, 2, real_idat=False)),
        ("bomb-png-idat-length-flip.png", bytes(flipped)),
        ("bomb-jpeg-20000x7000-header.jpg", bytes(jpeg)),
    ]
    try:
        import io

        from PIL import Image

        for side in (12000, 30000):
            buf = io.BytesIO()
            Image.new("L", (side, side)).save(buf, format="TIFF", compression="tiff_adobe_deflate")
            out.append((f"bomb-tiff-deflate-{side}.tif", buf.getvalue()))
    except ImportError:
        pass
    return out


def special_files(root: Path) -> list[Path]:
    """FIFOs, sockets, links to devices, directories with image names, dangling and looping links."""
    made = []

    def link(name: str, target: str) -> None:
        os.symlink(target, root / name)
        made.append(root / name)

    os.mkfifo(root / "special-fifo.png")
    made.append(root / "special-fifo.png")
    link("special-link-to-fifo.jpg", str(root / "special-fifo.png"))
    for dev in ("/dev/zero", "/dev/urandom", "/dev/null"):
        if os.path.exists(dev):
            link(f"special-link-{Path(dev).name}.png", dev)
    link("special-dangling.png", str(root / "does-not-exist.png"))
    link("special-loop-a.png", str(root / "special-loop-b.png"))
    link("special-loop-b.png", str(root / "special-loop-a.png"))
    (root / "special-directory.png").mkdir()
    made.append(root / "special-directory.png")
    sock_path = root / "special-socket.png"
    if len(str(sock_path)) < 100:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(sock_path))
        s.close()
        made.append(sock_path)
    for name in ("special-unicode-\u00e9\u00e8\u4e2d\u6587.png", "special name with spaces.png", "-special-dash.png"):
        (root / name).write_bytes(cv2.imencode(".png", digit_photo(np.random.default_rng(len(name))))[1].tobytes())
        made.append(root / name)
    return made


def generate_corpus(root: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` hostile inputs (at least the specials and bombs) in ``root``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = special_files(root)
    for name, data in bombs():
        (root / name).write_bytes(data)
        paths.append(root / name)
    base = seeds(rng)
    magics = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"II*\x00", b"MM\x00*", b"BM", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
              b"P5\n", b"P6\n", b"GIF89a", b"\x00\x00\x01\x00", b"#?RADIANCE\n", b"Pf\n"]
    i = 0
    while len(paths) < count:
        u = rng.random()
        if u < 0.80:
            ext, data = base[int(rng.integers(len(base)))]
            kind, data = mutate(rng, data)
            if rng.random() < 0.2:  # mutations compound
                kind, data = mutate(rng, data)
            name = f"{i:05d}-{kind}{ext}"
        elif u < 0.90:
            magic = magics[int(rng.integers(len(magics)))]
            data = magic + rng.bytes(int(rng.integers(0, 4000)))
            name = f"{i:05d}-magic-noise.png"
        elif u < 0.95:
            data = rng.bytes(int(rng.integers(0, 3000)))
            name = f"{i:05d}-noise.jpg"
        else:  # valid images of odd shapes: tiny, thin, blank, pure noise
            h, w = (int(v) for v in rng.choice([1, 7, 8, 9, 28, 300, 2000], 2))
            kind = str(rng.choice(["blank", "noise"]))
            img = np.full((h, w), 200, np.uint8) if kind == "blank" else rng.integers(0, 256, (h, w), dtype=np.uint8)
            data = cv2.imencode(".png", img)[1].tobytes()
            name = f"{i:05d}-{kind}-{w}x{h}.png"
        (root / name).write_bytes(data)
        paths.append(root / name)
        i += 1
    return paths


# ------------------------------------------------------------ running


@dataclass
class Run:
    """One subprocess: what it printed, how it ended, its peak memory."""

    returncode: int | None  # None: killed after the timeout (a hang)
    stdout: str
    stderr: str
    peak_rss_mb: float
    seconds: float


# The measured command is started by this small launcher, not by the caller: on Linux a child's peak RSS
# (ru_maxrss) starts at its parent's size at fork and survives exec, so a command forked straight from a
# big process (a test session that imported torch) would report that process's size as its own.
LAUNCHER = r"""
import json, os, resource, subprocess, sys
limit = int(sys.argv[1]) * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
code = subprocess.run(sys.argv[3:]).returncode
with open(sys.argv[2], "w") as f:
    json.dump({"maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}, f)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_limited(cmd: list[str], timeout: float, rlimit_mb: int, env: dict | None = None) -> Run:
    """Run ``cmd`` under the address-space limit, in its own process group (a timeout ends its children
    too); its peak RSS as the launcher measured it."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".json") as report:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(rlimit_mb), report.name, *cmd], stdout=out,
                                stderr=err, stdin=subprocess.DEVNULL, cwd=REPO, env=env, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
        out.seek(0)
        err.seek(0)
        try:
            peak = json.load(report)["maxrss_kb"] / 1024
        except ValueError:  # killed before it could tell
            peak = 0.0
        if code is not None and code > 128 and code - 128 in (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT):
            code = -(code - 128)  # as Popen reports a death by signal
        return Run(code, out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace"),
                   peak, time.perf_counter() - start)


API_WORKER = r"""
import json, sys
from runtime import DigitClassifier, ModelError, RuntimeInputError
clf = DigitClassifier(threads=1)
number = sys.argv[1] == "number"
for path in sys.argv[2:]:
    try:
        if number:
            r = clf.read_number(path)
            out = {"path": path, "number": r.number}
        else:
            p = clf.classify_one(path)
            out = {"path": path, "digit": p.label, "confidence": round(p.confidence, 4)}
    except (RuntimeInputError, ModelError) as e:
        out = {"path": path, "error": str(e)}
    except MemoryError:
        out = {"path": path, "error": "MemoryError"}
    print(json.dumps(out, allow_nan=False), flush=True)
"""


@dataclass
class Tally:
    """Counts over one mode."""

    inputs: int = 0
    runs: int = 0
    hangs: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)  # inputs without exactly one valid JSON line
    over_floor: list[str] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    results: int = 0
    errors: int = 0
    seconds: float = 0.0

    def summary(self) -> dict:
        return {"inputs": self.inputs, "runs": self.runs, "hangs": len(self.hangs), "crashes": len(self.crashes),
                "inputs_without_one_json_line": len(self.bad_lines), "peak_rss_mb": round(self.peak_rss_mb, 1),
                "inputs_over_rss_floor": len(self.over_floor), "answers": self.results, "error_lines": self.errors,
                "seconds": round(self.seconds, 1),
                "examples": {"hangs": self.hangs[:5], "crashes": self.crashes[:5], "bad_lines": self.bad_lines[:5],
                             "over_floor": self.over_floor[:5]}}


def command(mode: str, paths: list[str]) -> list[str]:
    if mode == "api" or mode == "api-number":
        return [sys.executable, "-c", API_WORKER, "number" if mode == "api-number" else "digit", *paths]
    return [sys.executable, "-m", "runtime", "classify", "--json", "--threads", "1",
            *(["--number"] if mode == "number" else []), "--", *paths]


def check_lines(run: Run, paths: list[str]) -> tuple[list[str], int, int]:
    """Inputs without exactly one JSON line (valid JSON, no NaN), answers, errors."""
    seen: dict[str, int] = {p: 0 for p in paths}
    results = errors = 0
    for line in run.stdout.splitlines():
        try:
            obj = json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        except ValueError:
            continue  # not JSON (or NaN/Infinity): its input counts as missing
        if obj.get("path") in seen:
            seen[obj["path"]] += 1
            errors += "error" in obj
            results += "error" not in obj
    return [p for p, n in seen.items() if n != 1], results, errors


def crashed(run: Run) -> bool:
    return run.returncode not in (0, 1) or "Traceback" in run.stderr or "Traceback" in run.stdout


def run_mode(mode: str, paths: list[str], chunk: int, rlimit_mb: int, per_input_s: float, tally: Tally,
             deadline: float) -> None:
    """Chunks of inputs per process; a chunk that fails any check is re-run
    one input at a time so that each failure is pinned on its input."""
    start = time.perf_counter()
    for i in range(0, len(paths), chunk):
        if time.perf_counter() > deadline:
            break
        part = paths[i:i + chunk]
        run = run_limited(command(mode, part), 30 + per_input_s * len(part), rlimit_mb)
        tally.runs += 1
        bad, results, errors = check_lines(run, part) if run.returncode is not None else (part, 0, 0)
        if run.returncode is None or crashed(run) or bad or run.peak_rss_mb > FLOOR_RSS_MB:
            if len(part) == 1:
                _record(tally, part[0], run, bad, results, errors)
            else:
                for p in part:
                    single = run_limited(command(mode, [p]), 30 + per_input_s, rlimit_mb)
                    tally.runs += 1
                    b, r, e = check_lines(single, [p]) if single.returncode is not None else ([p], 0, 0)
                    _record(tally, p, single, b, r, e)
        else:
            tally.inputs += len(part)
            tally.results += results
            tally.errors += errors
            tally.peak_rss_mb = max(tally.peak_rss_mb, run.peak_rss_mb)
    tally.seconds += time.perf_counter() - start


def _record(tally: Tally, path: str, run: Run, bad: list[str], results: int, errors: int) -> None:
    tally.inputs += 1
    tally.results += results
    tally.errors += errors
    tally.peak_rss_mb = max(tally.peak_rss_mb, run.peak_rss_mb)
    if run.returncode is None:
        tally.hangs.append(path)
        return
    if crashed(run):
        tail = (run.stderr.strip().splitlines() or ["?"])[-1][:160]
        tally.crashes.append(f"{path}: exit {run.returncode}: {tail}")
    if bad:
        tally.bad_lines.append(path)
    if run.peak_rss_mb > FLOOR_RSS_MB:
        tally.over_floor.append(f"{path}: {run.peak_rss_mb:.0f} MB")


# ------------------------------------------------------------ the webcam


def webcam_cases(root: Path, rng: np.random.Generator) -> list[tuple[str, list[str], set[int]]]:
    """(name, arguments, allowed exit codes): hostile sources and outputs."""
    video = root / "webcam-good.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 15, (160, 120))
    for k in range(30):
        writer.write(cv2.resize(digit_photo(np.random.default_rng(k)), (160, 120)))
    writer.release()
    good = video.read_bytes()
    cases = [("good video", ["--source", str(video)], {0})]
    for j in range(6):
        d = bytearray(good)
        for _ in range(int(rng.integers(5, 60))):
            d[int(rng.integers(len(d) // 10, len(d)))] ^= 1 << int(rng.integers(8))
        p = root / f"webcam-flipped-{j}.mp4"
        p.write_bytes(bytes(d))
        cases.append((f"bit-flipped video {j}", ["--source", str(p)], {0, 1, 2}))
    cut = root / "webcam-cut.mp4"
    cut.write_bytes(good[: len(good) * 2 // 3])
    fifo = root / "webcam-fifo.mp4"
    os.mkfifo(fifo)
    outdir = root / "webcam-out-dir"
    outdir.mkdir()
    cases += [
        ("truncated video", ["--source", str(cut)], {1, 2}),
        ("FIFO source", ["--source", str(fifo)], {2}),
        ("/dev/zero source", ["--source", "/dev/zero"], {2}),
        ("missing source", ["--source", str(root / "nope.mp4")], {2}),
        ("directory source", ["--source", str(outdir)], {2}),
        ("image as video", ["--source", str(next(root.glob("special-unicode-*.png")))], {0, 1, 2}),
        ("output is a directory", ["--source", str(video), "--output", str(outdir)], {2}),
        ("output in a missing directory", ["--source", str(video), "--output", str(root / "no" / "x.mp4")], {2}),
        ("number mode, flipped video", ["--source", str(root / "webcam-flipped-0.mp4"), "--number"], {0, 1, 2}),
    ]
    return cases


def run_webcam(root: Path, rlimit_mb: int, seed: int) -> dict:
    cases = webcam_cases(root, np.random.default_rng([seed, 5]))
    out = {"runs": 0, "hangs": [], "crashes": [], "unexpected_exit": [], "temp_files_left": [], "peak_rss_mb": 0.0}
    for name, args, allowed in cases:
        run = run_limited([sys.executable, "-m", "runtime", "webcam", "--no-display", "--threads", "1", *args],
                          600, rlimit_mb)  # generous: a hang is a run that never ends, not a slow one
        out["runs"] += 1
        out["peak_rss_mb"] = max(out["peak_rss_mb"], round(run.peak_rss_mb, 1))
        if run.returncode is None:
            out["hangs"].append(name)
        elif "Traceback" in run.stderr:
            out["crashes"].append(f"{name}: {run.stderr.strip().splitlines()[-1][:160]}")
        elif run.returncode not in allowed:
            out["unexpected_exit"].append(f"{name}: exit {run.returncode}: "
                                          f"{(run.stderr.strip().splitlines() or [''])[-1][:160]}")
    out["temp_files_left"] = [str(p) for p in root.rglob(".*.tmp*")]
    return out


# ------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=10_000, help="hostile files (default 10,000; at least ~30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", nargs="+", default=["digit", "number", "api", "webcam"],
                   choices=["digit", "number", "api", "api-number", "webcam"])
    p.add_argument("--chunk", type=int, default=250, help="inputs per process (default 250)")
    p.add_argument("--rlimit-mb", type=int, default=DEFAULT_RLIMIT_MB,
                   help=f"address-space limit of every run, MiB (default {DEFAULT_RLIMIT_MB})")
    p.add_argument("--per-input-s", type=float, default=3.0, help="timeout budget per input (default 3 s)")
    p.add_argument("--time-limit", type=float, default=900, help="stop starting new runs after this many s")
    p.add_argument("--keep", help="build the corpus in this directory and keep it")
    p.add_argument("--json-out")
    args = p.parse_args(argv)

    deadline = time.perf_counter() + args.time_limit
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="edge-digits-fuzz-"))
    try:
        t = time.perf_counter()
        corpus = [str(p) for p in generate_corpus(root / "corpus", args.count, args.seed)]
        print(f"corpus: {len(corpus)} files in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        report = {"count": len(corpus), "seed": args.seed, "rlimit_mb": args.rlimit_mb, "floor_rss_mb": FLOOR_RSS_MB,
                  "machine": machine_line(), "modes": {}}
        for mode in args.modes:
            if mode == "webcam":
                report["modes"]["webcam"] = run_webcam(root / "corpus", args.rlimit_mb, args.seed)
            else:
                tally = Tally()
                run_mode(mode, corpus, args.chunk, args.rlimit_mb, args.per_input_s, tally, deadline)
                report["modes"][mode] = tally.summary()
            print(f"{mode}: {json.dumps(report['modes'][mode])}", file=sys.stderr, flush=True)
        report["floors_met"] = floors_met(report)
        print(json.dumps(report, indent=1))
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(report, indent=1))
        return 0 if report["floors_met"] else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def floors_met(report: dict) -> bool:
    ok = True
    for mode, r in report["modes"].items():
        if mode == "webcam":
            ok &= not (r["hangs"] or r["crashes"] or r["unexpected_exit"] or r["temp_files_left"])
        else:
            ok &= (r["hangs"] == r["crashes"] == r["inputs_without_one_json_line"] == r["inputs_over_rss_floor"] == 0
                   and r["inputs"] == report["count"])
    return bool(ok)


def machine_line() -> dict:
    from benchmarks.machine import cpu_info, load_average
    from runtime.model import usable_cores

    model, flags = cpu_info()
    return {"cpu": model, "cpu_flags": flags, "cores": usable_cores(), "load_average_1_5_15min": load_average()}


if __name__ == "__main__":
    sys.exit(main())
