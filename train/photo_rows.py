"""Training rows for the row reader from the runtime's own view of photos.

    python -m train.photo_rows --out runs/photo_rows.npz [--numbers 4000] [--seed 200]

Synthetic photos of numbers made from MNIST **training** digits
(``synth_photos``: paper, chalk, pens, light, shadows, blur, noise, JPEG;
here also ruled paper and digits overlapping their neighbours), cut into rows
by the runtime exactly as ``--number`` does (runtime.rows), and labelled with
the number. A photo whose ink the runtime finds as more than one row is left
out: which row holds which digits is unknown. ``python -m train --recipe
reader --photo-rows FILE`` mixes them into the synthetic rows; the file
format is in docs/FORMATS.md. The benchmark's photos use test digits only.
"""
from __future__ import annotations

import argparse
import os
import sys
from multiprocessing import Pool

import numpy as np
from tqdm import tqdm

from runtime import RuntimeInputError
from runtime.rows import find_row_images

from .files import atomic_output
from .idx import DATA_ENV, load_split, resolve_data_dir
from .styles import STYLES_HELP, restyle
from .synth_photos import make_number

CHUNK = 100  # photos per task
MAX_SIDE = 1200  # frames no larger: the rows come out the same, the photos much cheaper to make
HEIGHT = 32  # the reader's input height (train.rows.ROW_HEIGHT; this side imports no torch)
RULED = 0.25  # share of photos on ruled paper
OVERLAPPING = 0.25  # share of photos whose digits overlap their neighbours
OVERLAP = (0.03, 0.25)  # by this share of the digits' mean width
# A row cut this much narrower or wider than its digits can be is a wrong cut (a digit lost to another
# row, a paper edge taken in): left out rather than taught with the wrong label. Reader pixels per digit.
DIGIT_WIDTH = (6, 48)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.photo_rows", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the .npz to write")
    p.add_argument("--numbers", type=int, default=4000, help="photos of numbers (1 to 8 digits)")
    p.add_argument("--seed", type=int, default=200, help="photo seed (keep it apart from the benchmark's)")
    p.add_argument("--overlapping", type=float, default=OVERLAPPING,
                   help="share of photos whose digits overlap their neighbours")
    p.add_argument("--styles", type=float, default=0.0, help=STYLES_HELP)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--data-dir", help=f"MNIST IDX files (default: ${DATA_ENV}, then ./data/MNIST/raw)")
    args = p.parse_args(argv)
    data_dir = str(resolve_data_dir(args.data_dir))
    load_split(data_dir, "train")  # fail here, not in every worker
    tasks = [(data_dir, args.seed, lo, min(lo + CHUNK, args.numbers), args.overlapping, args.styles)
             for lo in range(0, args.numbers, CHUNK)]
    with Pool(max(1, args.workers)) as pool:
        parts = list(tqdm(pool.imap(rows_of, tasks), total=len(tasks), unit="task", desc="photo rows"))
    rows = [r for part in parts for r in part[0]]
    texts = [t for part in parts for t in part[1]]
    width = max(r.shape[1] for r in rows)
    images = np.zeros((len(rows), HEIGHT, width), np.uint8)
    for k, r in enumerate(rows):
        images[k, :, :r.shape[1]] = np.clip(r * 255 + 0.5, 0, 255).astype(np.uint8)
    with atomic_output(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, images=images, widths=np.array([r.shape[1] for r in rows], np.int32),
                                texts=np.array(texts, dtype=str))
    print(f"wrote {args.out}: {len(rows):,} rows from {args.numbers:,} photos")
    return 0


_worker: dict = {}


def rows_of(task) -> tuple[list[np.ndarray], list[str]]:
    data_dir, seed, lo, hi, overlapping, styles = task
    if not _worker:
        digits, labels = load_split(data_dir, "train")
        _worker["mnist"] = restyle(digits, labels, styles, seed), labels
    digits, labels = _worker["mnist"]
    rows, texts = [], []
    for i in range(lo, hi):
        rng = np.random.default_rng([seed, 1, i])
        ks = rng.integers(len(digits), size=int(rng.integers(1, 9)))
        overlap = OVERLAP if rng.random() < overlapping else None
        sample = make_number(rng, [digits[k] for k in ks], [labels[k] for k in ks], MAX_SIDE, overlap=overlap,
                             ruled=rng.random() < RULED)
        try:
            found = find_row_images(sample.image, HEIGHT)
        except RuntimeInputError:
            continue  # no ink found: nothing to learn from
        if len(found) == 1 and plausible(found[0].pixels.shape[1], len(sample.label)):
            rows.append(found[0].pixels)
            texts.append(sample.label)
    return rows, texts


def plausible(width: int, digits: int) -> bool:
    lo, hi = DIGIT_WIDTH
    return lo * digits <= width - 16 <= hi * digits


if __name__ == "__main__":
    sys.exit(main())
