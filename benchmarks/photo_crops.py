"""Training data from the runtime's own view of photos: what it cuts out of
synthetic photos of MNIST **training** digits, with the digits' labels.

    python -m benchmarks.photo_crops --out runs/photo_crops.npz [--digits 6000] [--numbers 3000]
                                     [--seed 100] [--model M]

The model learns MNIST as MNIST was made; the runtime feeds it digits
found in photos, whose strokes, framing and leftovers (a neighbour's hook,
a gap where a cut crossed) differ. This writes those inputs, labelled, so
that training can show them to the model (``python -m train
--photo-crops FILE``): single digits as ``preprocess_digit`` frames them,
and the pieces of numbers as the number reader cuts them. A row's pieces
are kept only when the reader cut it into as many pieces as it has digits
(they are labelled by position); the cuts depend on the model used here
(default: the shipped one). Photos come from ``synth_photos`` with MNIST
training digits only; the benchmark's test photos use test digits.

Lives beside the photo generator because it needs both it and the runtime;
``train`` only reads the file it writes (docs/FORMATS.md).
"""
from __future__ import annotations

import argparse
import os
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import SHARED_DATA_DIR  # noqa: E402
from benchmarks.synth_photos import make_digit, make_number  # noqa: E402
from runtime import DigitClassifier, RuntimeInputError, preprocess_digit  # noqa: E402
from runtime.segment import NARROW_ONE, choose, segment_number, unique_crops  # noqa: E402
from train.files import atomic_output  # noqa: E402
from train.idx import DATA_ENV, DataError, data_dir_from, load_split  # noqa: E402

CHUNK = 100  # photos per task
MAX_SIDE = 1200  # frames no larger: the crops are the same, the photos much cheaper to make
# Pieces of reading hypotheses that are clearly not one digit are kept too,
# labelled NOT_A_DIGIT (see not_one_digit). Pieces in between (a digit that
# lost a bit to a cut, or kept a neighbour's hook) are left out: they look
# like the right cuts of touching digits, which must stay sure.
PART_IOU = 0.35
JOINED_COVER = 0.6
# Narrow pieces are left out too: a stroke of a 4 or a 0 looks like a 1 once
# framed, and only the row (segment's priors), not the model, can tell them.
NOT_A_DIGIT = -1  # label of such a piece (source 2); training shows them as outliers


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.photo_crops", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the .npz to write")
    p.add_argument("--digits", type=int, default=6000, help="photos of single digits")
    p.add_argument("--numbers", type=int, default=3000, help="photos of numbers (3-6 digits)")
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--model", help="ONNX model that picks the cuts (default: the shipped one)")
    p.add_argument("--data-dir", help=f"MNIST IDX files (default: ${DATA_ENV}, then ../shared)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    if args.digits < 0 or args.numbers < 0 or args.digits + args.numbers == 0:
        p.error("--digits and --numbers: at least one photo, none negative")
    try:
        images, labels, sources = make_crops(args)
    except (DataError, RuntimeInputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    with atomic_output(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, images=images, labels=labels, source=sources)
    print(f"wrote {len(images):,} crops ({np.count_nonzero(sources == 0):,} single digits, "
          f"{np.count_nonzero(sources == 1):,} pieces of numbers) to {args.out}")
    return 0


def make_crops(args) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data_dir = str(data_dir_from(args.data_dir, SHARED_DATA_DIR))
    load_split(data_dir, "train")  # fail here, not in every worker
    tasks = [(data_dir, args.model, args.seed, kind, lo, min(lo + CHUNK, n))
             for kind, n in (("digit", args.digits), ("number", args.numbers)) for lo in range(0, n, CHUNK)]
    with Pool(max(1, args.workers)) as pool:
        parts = list(tqdm(pool.imap(crops_of, tasks), total=len(tasks), unit="task", desc="photo crops"))
    images, labels, sources = (np.concatenate(arrays) for arrays in zip(*parts))
    return images, labels, sources


_worker: dict = {}  # per process: the training digits and the classifier, loaded once


def crops_of(task) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops of photos lo..hi of one kind: uint8 images, labels, source (0 digit, 1 piece of a number)."""
    data_dir, model, seed, kind, lo, hi = task
    if not _worker:
        _worker["mnist"] = load_split(data_dir, "train")
        _worker["clf"] = DigitClassifier(model, threads=1)
    digits, digit_labels = _worker["mnist"]
    clf = _worker["clf"]
    pixels, labels, sources = [], [], []
    for i in range(lo, hi):
        rng = np.random.default_rng([seed, 0 if kind == "digit" else 1, i])
        try:
            if kind == "digit":
                k = int(rng.integers(len(digits)))
                sample = make_digit(rng, digits[k], digit_labels[k], MAX_SIDE)
                pixels.append(chosen_view(clf, preprocess_digit(sample.image, clf.input_size)))
                labels.append(int(digit_labels[k]))
                sources.append(0)
            else:
                ks = rng.integers(len(digits), size=int(rng.integers(3, 7)))
                sample = make_number(rng, [digits[k] for k in ks], [digit_labels[k] for k in ks], MAX_SIDE)
                slots = segment_number(sample.image, clf.input_size)
                pieces = choose(clf, [slots])[0]
                kept = set()
                if len(pieces) == len(ks):
                    pixels.extend(crop.pixels for crop, _ in pieces)
                    labels.extend(int(digit_labels[k]) for k in ks)
                    sources.extend([1] * len(ks))
                    kept = {id(crop) for crop, _ in pieces}
                junk = [c for c in unique_crops(slots) if id(c) not in kept and c.box[2] >= NARROW_ONE * c.box[3]
                        and not_one_digit(c.box, sample.meta["digit_boxes"])]
                pixels.extend(c.pixels for c in junk)
                labels.extend([NOT_A_DIGIT] * len(junk))
                sources.extend([2] * len(junk))
        except RuntimeInputError:
            continue  # no ink found: nothing to learn from
    images = np.clip(np.array(pixels, np.float32).reshape(-1, 28, 28) * 255 + 0.5, 0, 255).astype(np.uint8)
    return images, np.array(labels, np.int64), np.array(sources, np.int8)


def not_one_digit(box, digit_boxes) -> bool:
    """Clearly not one digit: the piece overlaps none of the digits' boxes
    much (intersection over union under PART_IOU: a part of one, a speck)
    or holds most of two of them (two joined). Boxes are [x, y, w, h]."""
    x, y, w, h = box
    ious, covers = [], []
    for bx, by, bw, bh in filter(None, digit_boxes):
        inter = (max(0, min(x + w, bx + bw) - max(x, bx))) * max(0, min(y + h, by + bh) - max(y, by))
        ious.append(inter / (w * h + bw * bh - inter))
        covers.append(inter / (bw * bh))
    return max(ious, default=0.0) < PART_IOU or sum(c >= JOINED_COVER for c in covers) >= 2


def chosen_view(clf: DigitClassifier, crop) -> np.ndarray:
    """The framing the classifier reads (of the crop and its other-polarity alternative: the one it is surer of)."""
    views = [crop, *crop.alternatives]
    if len(views) == 1:
        return crop.pixels
    confidence = clf.predict_pixels(np.stack([v.pixels for v in views])).max(axis=1)
    return views[int(np.argmax(confidence))].pixels


if __name__ == "__main__":
    sys.exit(main())
