"""Training data from the runtime's own view of photos: the digits it frames in
synthetic photos of MNIST **training** digits, with their labels.

    python -m train.photo_crops --out runs/photo_crops.npz [--digits 6000] [--seed 100]

The model learns MNIST as MNIST was made; the runtime feeds it digits
found in photos, whose strokes, framing and leftovers differ. This writes
those inputs, labelled, so that training can show them to the model
(``python -m train --photo-crops FILE``): single digits as
``preprocess_digit`` frames them (source 0 of docs/FORMATS.md). Pieces of
numbers (sources 1 and 2) came from the cut search that the row reader
replaced; files written before hold them, and train still reads them.
Photos come from ``train.synth_photos`` with MNIST training digits only;
the benchmark's test photos use test digits. The training loop only reads
the file this writes (docs/FORMATS.md); this module, not the loop, runs the
runtime (which never imports train).
"""
from __future__ import annotations

import argparse
import os
import sys
from multiprocessing import Pool

import numpy as np
from tqdm import tqdm

from runtime import DigitClassifier, RuntimeInputError, preprocess_digit

from .files import atomic_output
from .idx import DATA_ENV, DataError, load_split, resolve_data_dir
from .styles import STYLES_HELP, restyle
from .synth_photos import make_digit

CHUNK = 100  # photos per task
MAX_SIDE = 1200  # frames no larger: the crops are the same, the photos much cheaper to make
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.photo_crops", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the .npz to write")
    p.add_argument("--digits", type=int, default=6000, help="photos of single digits")
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--model", help="ONNX model that picks the polarity when in doubt (default: the shipped one)")
    p.add_argument("--data-dir", help=f"MNIST IDX files (default: ${DATA_ENV}, then ./data/MNIST/raw)")
    p.add_argument("--styles", type=float, default=0.0, help=STYLES_HELP)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    if args.digits < 1:
        p.error("--digits: at least one photo")
    try:
        images, labels, sources = make_crops(args)
    except (DataError, RuntimeInputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    with atomic_output(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, images=images, labels=labels, source=sources)
    print(f"wrote {len(images):,} crops of single digits to {args.out}")
    return 0


def make_crops(args) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data_dir = str(resolve_data_dir(args.data_dir))
    load_split(data_dir, "train")  # fail here, not in every worker
    tasks = [(data_dir, args.model, args.seed, lo, min(lo + CHUNK, args.digits), args.styles)
             for lo in range(0, args.digits, CHUNK)]
    with Pool(max(1, args.workers)) as pool:
        parts = list(tqdm(pool.imap(crops_of, tasks), total=len(tasks), unit="task", desc="photo crops"))
    images, labels, sources = (np.concatenate(arrays) for arrays in zip(*parts))
    return images, labels, sources


_worker: dict = {}  # per process: the training digits and the classifier, loaded once


def crops_of(task) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops of photos lo..hi: uint8 images, labels, source (0: a single digit)."""
    data_dir, model, seed, lo, hi, styles = task
    if not _worker:
        digits, digit_labels = load_split(data_dir, "train")
        _worker["mnist"] = restyle(digits, digit_labels, styles, seed), digit_labels
        _worker["clf"] = DigitClassifier(model, threads=1)
    digits, digit_labels = _worker["mnist"]
    clf = _worker["clf"]
    pixels, labels = [], []
    for i in range(lo, hi):
        rng = np.random.default_rng([seed, 0, i])
        k = int(rng.integers(len(digits)))
        sample = make_digit(rng, digits[k], digit_labels[k], MAX_SIDE)
        try:
            pixels.append(chosen_view(clf, preprocess_digit(sample.image, clf.input_size)))
        except RuntimeInputError:
            continue  # no ink found: nothing to learn from
        labels.append(int(digit_labels[k]))
    images = np.clip(np.array(pixels, np.float32).reshape(-1, 28, 28) * 255 + 0.5, 0, 255).astype(np.uint8)
    return images, np.array(labels, np.int64), np.zeros(len(labels), np.int8)


def chosen_view(clf: DigitClassifier, crop) -> np.ndarray:
    """The framing the classifier reads (of the crop and its other-polarity alternative: the one it is surer of)."""
    views = [crop, *crop.alternatives]
    if len(views) == 1:
        return crop.pixels
    confidence = clf.predict_pixels(np.stack([v.pixels for v in views])).max(axis=1)
    return views[int(np.argmax(confidence))].pixels


if __name__ == "__main__":
    sys.exit(main())
