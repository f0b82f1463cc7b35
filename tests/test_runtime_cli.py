"""``python -m runtime``: classify files and directories, bad inputs, webcam."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.needs_model


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def digits(mnist_test):
    images, labels = mnist_test
    return images, labels


@pytest.fixture(scope="module")
def photos(tmp_path_factory, digits, paper_photo, encode):
    """A directory of good photos (PNG, JPEG, BMP, nested) and their labels."""
    images, labels = digits
    root = tmp_path_factory.mktemp("photos")
    (root / "nested" / "deeper").mkdir(parents=True)
    expected = {}
    for i, (name, ext) in enumerate([("a", ".png"), ("b", ".jpg"), ("nested/c", ".bmp"), ("nested/deeper/d", ".webp")]):
        path = root / f"{name}{ext}"
        path.write_bytes(encode(paper_photo(images[i], seed=i), ext))
        expected[str(path)] = str(labels[i])
    (root / "notes.txt").write_text("not an image, and not picked up from a directory")
    return root, expected


def bad_inputs(tmp: Path, digits, paper_photo, encode) -> dict[str, str]:
    """One file per kind of bad input, with a word its error must contain."""
    images, _ = digits
    good_jpeg = encode(paper_photo(images[0]), ".jpg")
    (tmp / "text.png").write_text("hello, I am not a PNG")
    (tmp / "empty.jpg").write_bytes(b"")
    (tmp / "truncated.jpg").write_bytes(good_jpeg[: len(good_jpeg) // 2])
    (tmp / "one-pixel.png").write_bytes(encode(np.zeros((1, 1), np.uint8), ".png"))
    (tmp / "zero-size.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + (0).to_bytes(4, "big")
                                        + (5).to_bytes(4, "big") + b"\x08\x02\x00\x00\x00" + b"\x00" * 20)
    (tmp / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + (90000).to_bytes(4, "big")
                                   + (90000).to_bytes(4, "big") + b"\x08\x02\x00\x00\x00" + b"\x00" * 20)
    (tmp / "blank.png").write_bytes(encode(np.full((480, 640, 3), 215, np.uint8), ".png"))
    return {"text.png": "not a readable image", "empty.jpg": "empty", "truncated.jpg": "truncated",
            "one-pixel.png": "too small", "zero-size.png": "zero size", "bomb.png": "too large",
            "blank.png": "no digit", "missing.jpg": "no such file"}


def test_classify_directory_json(photos, model_args):
    root, expected = photos
    result = run_cli("classify", str(root), "--json", *model_args)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["path"] for r in rows} == set(expected)  # recursive, image files only
    for r in rows:
        assert set(r) == {"path", "digit", "confidence"}
        assert r["digit"] == expected[r["path"]]
        assert 0.0 <= r["confidence"] <= 1.0


def test_shipped_models_by_name(photos, tmp_path, monkeypatch):
    """--model accurate reads the larger shipped model; a file of that name in the working directory wins."""
    from runtime.model import MODELS_DIR, model_path

    assert model_path("accurate") == MODELS_DIR / "digits-accurate-int8.onnx"
    assert model_path(None) == model_path("default") == MODELS_DIR / "digits-int8.onnx"
    root, expected = photos
    result = run_cli("classify", str(root), "--json", "--model", "accurate")
    assert result.returncode == 0, result.stderr
    assert {json.loads(line)["path"]: json.loads(line)["digit"] for line in result.stdout.splitlines()} == expected
    monkeypatch.chdir(tmp_path)
    (tmp_path / "accurate").write_bytes(b"not a model")
    assert model_path("accurate") == Path("accurate")


def test_classify_table(photos, model_args):
    root, expected = photos
    result = run_cli("classify", *sorted(expected), "--batch-size", "3", "--threads", "1", *model_args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["DIGIT", "CONF", "FILE"]
    assert [line.split()[0] for line in lines[1:]] == [expected[p] for p in sorted(expected)]


def test_bad_inputs_are_reported_one_line_each_and_others_still_classified(tmp_path, photos, digits, model_args,
                                                                          paper_photo, encode):
    root, expected = photos
    bad = bad_inputs(tmp_path, digits, paper_photo, encode)
    good = sorted(expected)[:2]
    args = [good[0], *[str(tmp_path / name) for name in bad], good[1]]
    result = run_cli("classify", *args, *model_args)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    errors = result.stderr.strip().splitlines()
    assert len(errors) == len(bad)
    for name, word in bad.items():
        [line] = [e for e in errors if name in e]
        assert word in line, line
    classified = [line.split()[-1] for line in result.stdout.splitlines()[1:]]
    assert classified == good

    as_json = run_cli("classify", *args, "--json", *model_args)
    assert as_json.returncode == 1
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["path"] for r in rows] == args  # input order, errors in place
    assert sum("error" in r for r in rows) == len(bad)


def test_huge_photo_is_classified(tmp_path, digits, paper_photo, encode, model_args):
    images, labels = digits
    path = tmp_path / "big.jpg"
    path.write_bytes(encode(paper_photo(images[1], size=(3000, 4000), frac=0.4), ".jpg"))
    result = run_cli("classify", str(path), "--json", *model_args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["digit"] == str(labels[1])


def test_unreadable_directory(tmp_path, photos, monkeypatch, capsys, model_args):
    """Run in-process so the test also works as root (who can read anything)."""
    from runtime import cli

    root, expected = photos
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(cli.os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    code = cli.main(["classify", str(locked), sorted(expected)[0], "--json", *model_args])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert "cannot read directory" in rows[0]["error"] and str(locked) in rows[0]["error"]
    assert rows[1]["digit"] == expected[sorted(expected)[0]]


def test_number_json(tmp_path, digits, encode, model_args):
    images, labels = digits
    picks = [3, 2, 1, 0]  # 0 1 2 7
    row = np.hstack([np.pad(images[i], ((0, 0), (2, 2))) for i in picks])  # spaced, dark ink on paper below
    canvas = np.full((300, 700, 3), 225, np.uint8)
    strip = cv2.resize(255 - row, (int(row.shape[1] * 4.5), 126), interpolation=cv2.INTER_CUBIC)
    canvas[90:90 + strip.shape[0], 80:80 + strip.shape[1]] = strip[..., None]
    path = tmp_path / "number.png"
    path.write_bytes(encode(canvas, ".png"))
    result = run_cli("classify", str(path), "--number", "--json", *model_args)
    assert result.returncode == 0, result.stderr
    obj = json.loads(result.stdout)
    assert set(obj) == {"path", "number", "rows", "digits"}
    assert obj["number"] == "".join(str(labels[i]) for i in picks) and obj["rows"] == [obj["number"]]
    xs = [d["box"][0] for d in obj["digits"]]
    assert xs == sorted(xs)
    for d in obj["digits"]:
        assert set(d) == {"digit", "confidence", "box", "row"} and len(d["box"]) == 4 and d["row"] == 0


def test_corrupt_model_is_one_clear_line(tmp_path, photos):
    root, expected = photos
    bad = tmp_path / "model.onnx"
    bad.write_bytes(os.urandom(2000))
    result = run_cli("classify", sorted(expected)[0], "--model", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert str(bad) in line and "model" in line
    missing = run_cli("classify", sorted(expected)[0], "--model", str(tmp_path / "nope.onnx"))
    assert missing.returncode == 2 and "not found" in missing.stderr


def make_video(path: Path, digits, paper_photo, frames: int = 12) -> Path:
    images, _ = digits
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 480))
    assert writer.isOpened()
    for i in range(frames):
        frame = paper_photo(images[i % 3], seed=i, centre=(0.3 + 0.03 * i, 0.5), frac=0.4) if i < frames - 2 \
            else np.full((480, 640, 3), 220, np.uint8)  # the last frames show blank paper
        writer.write(frame)
    writer.release()
    return path


def test_webcam_headless_writes_annotated_video(tmp_path, digits, model_args, paper_photo):
    video = make_video(tmp_path / "in.mp4", digits, paper_photo)
    out = tmp_path / "out.mp4"
    for extra in ([], ["--number"]):
        out.unlink(missing_ok=True)
        result = run_cli("webcam", "--source", str(video), "--no-display", "--output", str(out), *extra, *model_args)
        assert result.returncode == 0, result.stderr
        cap = cv2.VideoCapture(str(out))
        count = 0
        while cap.read()[0]:
            count += 1
        assert count == 12
        assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # temp file renamed away


def test_webcam_bad_sources_are_one_line_errors(tmp_path, mnist_test, model_args, paper_photo):
    not_video = tmp_path / "x.mp4"
    not_video.write_text("nope")
    for source in [str(tmp_path / "missing.mp4"), str(not_video), "97"]:
        result = run_cli("webcam", "--source", source, "--no-display", *model_args)
        assert result.returncode == 2, source
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    video = make_video(tmp_path / "v.mp4", mnist_test, paper_photo, 3)
    display = run_cli("webcam", "--source", str(video), *model_args)
    if display.returncode != 0:  # headless OpenCV: a clear pointer to --no-display
        assert "--no-display" in display.stderr and "Traceback" not in display.stderr


def test_the_api_gives_every_image_its_answer_or_its_error(tmp_path, digits, paper_photo, encode, model_path):
    """DigitClassifier.classify, the loop the CLI and the benchmarks share, does not stop at a bad image."""
    from runtime import DigitClassifier, NoDigitFound, RuntimeInputError

    images, labels = digits
    good = [tmp_path / f"{k}.jpg" for k in range(2)]
    for k, path in enumerate(good):
        path.write_bytes(encode(paper_photo(images[k]), ".jpg"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    blank = np.full((120, 160, 3), 225, np.uint8)
    clf = DigitClassifier(model_path, threads=1)
    outcomes = clf.classify([good[0], broken, blank, good[1]])
    assert [o.ok for o in outcomes] == [True, False, False, True]
    assert [outcomes[0].result.label, outcomes[3].result.label] == [str(labels[0]), str(labels[1])]
    assert isinstance(outcomes[1].error, RuntimeInputError) and str(outcomes[1].error).startswith(str(broken))
    assert isinstance(outcomes[2].error, NoDigitFound) and outcomes[2].source is None
    assert clf.classify_one(good[0]).label == str(labels[0])
    with pytest.raises(NoDigitFound):
        clf.classify_one(blank)
