"""The benchmark's photo generator knows where each digit of a number is
(train/photo_crops.py labels pieces by it)."""

from train.idx import load_split
from train.synth_photos import generate_set


def test_digit_boxes_hold_each_digits_ink_left_to_right(mnist_dir):
    images, labels = load_split(mnist_dir, "test")
    for s in generate_set(images, labels, 0, 12, seed=3, max_side=600):
        boxes = s.meta["digit_boxes"]
        assert len(boxes) == len(s.label)
        h, w = s.image.shape[:2]
        x0, y0, bw, bh = s.meta["box"]
        for x, y, dw, dh in boxes:
            # inside the row's box, which is inside the photo; at least a third of the row's height
            assert x0 <= x and x + dw <= min(w, x0 + bw) and y0 <= y and y + dh <= min(h, y0 + bh)
            assert dh >= bh / 3
        centres = [x + dw / 2 for x, _, dw, _ in boxes]
        assert centres == sorted(centres)
        # together they span the row from its first to its last column
        assert min(b[0] for b in boxes) - x0 <= 2 and x0 + bw - max(b[0] + b[2] for b in boxes) <= 2
