"""Outliers and cut pieces: what the number reader shows the model besides clean digits (train/pieces.py)."""
import numpy as np
import torch

from train import trainer
from train.data import to_input
from train.idx import load_split
from train.pieces import fit, make_cut_pieces, make_outliers


def ink_box(img: torch.Tensor) -> tuple[int, int]:
    ys, xs = torch.nonzero(img > 0.05, as_tuple=True)
    return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


def test_fit_frames_like_mnist_and_keeps_the_stroke():
    canvas = torch.zeros(40, 90)
    canvas[5:35, 10:13] = 1.0   # two 3-pixel strokes far apart: a wide mark
    canvas[5:35, 70:73] = 1.0
    out = fit(canvas)
    assert out.shape == (28, 28) and float(out.max()) == 1.0
    h, w = ink_box(out)
    assert max(h, w) in (20, 21, 22) and w > h  # longer side fitted to the 20-pixel box (plus antialiasing)
    idx = torch.arange(28.0)
    cy, cx = (out.sum(1) * idx).sum() / out.sum(), (out.sum(0) * idx).sum() / out.sum()
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    # Shrunk 4.5x, a 3-pixel stroke would vanish to under a pixel; it is widened first.
    assert int((out[14] > 0.5).sum()) >= 4


def test_outliers_are_deterministic_and_unlike_their_sources(mnist_dir):
    images = torch.from_numpy(load_split(mnist_dir, "test")[0][:2000].copy())
    a, b = make_outliers(images, 200, seed=1), make_outliers(images, 200, seed=1)
    assert a.dtype == torch.uint8 and a.shape == (200, 28, 28)
    assert torch.equal(a, b) and not torch.equal(a, make_outliers(images, 200, seed=2))
    assert all(int(o.max()) == 255 for o in a)
    # Touching digits are wider than tall, unlike most single digits.
    wide = np.mean([ink_box(o.float() / 255)[1] > ink_box(o.float() / 255)[0] for o in a])
    single = np.mean([ink_box(d.float() / 255)[1] > ink_box(d.float() / 255)[0] for d in images[:200]])
    assert wide > single + 0.2


def test_cut_pieces_keep_their_digit_and_label(mnist_dir):
    images, labels = (torch.from_numpy(a[:2000].copy()) for a in load_split(mnist_dir, "test"))
    pieces, piece_labels = make_cut_pieces(images, labels, 100, seed=0)
    again, _ = make_cut_pieces(images, labels, 100, seed=0)
    assert pieces.shape == (100, 28, 28) and torch.equal(pieces, again)
    assert piece_labels.dtype == torch.int64 and set(piece_labels.tolist()) <= set(range(10))
    assert len(set(piece_labels.tolist())) >= 8
    # A piece is mostly its own digit: it looks like MNIST digits of its label
    # more than like those of other labels (nearest class mean).
    means = torch.stack([images[labels == d].float().mean(0) for d in range(10)])
    dist = ((pieces.float()[:, None] - means[None]) ** 2).sum((2, 3))
    assert (dist.argmin(1) == piece_labels).float().mean() > 0.6


def test_outlier_exposure_makes_the_model_unsure_of_touching_digits(tmp_path, mnist_dir, small_config):
    """The point of it: after a short run with outliers, the model's
    confidence on touching test digits is far below its confidence on
    single test digits (a model trained on digits alone is sure of both)."""
    cfg = small_config(tmp_path, mnist_dir, train_subset=6000, epochs=3, outliers=0.5, cut_pieces=0.2,
                       label_smoothing=0.0)
    trainer.train(cfg)
    from train import checkpoint

    model = checkpoint.load_model(checkpoint.load(tmp_path / "best.pt")).eval()
    test = torch.from_numpy(load_split(mnist_dir, "test")[0][:3000].copy())
    with torch.no_grad():
        conf = {name: torch.softmax(model(to_input(imgs, 0.5, 0.5)), 1).amax(1).mean().item()
                for name, imgs in (("digits", test[:500]), ("outliers", make_outliers(test, 500, seed=3)))}
    assert conf["digits"] > 0.9
    assert conf["outliers"] < conf["digits"] - 0.25, conf
