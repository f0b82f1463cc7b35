import numpy as np
import pytest

from train.data import load_splits
from train.idx import DATA_ENV, DataError, load_split, read_idx, resolve_data_dir
from train.styles import restyle


def test_reads_plain_and_gzipped_alike(tmp_path, write_dataset):
    plain = load_split(write_dataset(tmp_path / "plain"), "train")
    gz = load_split(write_dataset(tmp_path / "gz", compress=True), "train")
    assert plain[0].shape == (600, 28, 28) and plain[1].shape == (600,)
    assert np.array_equal(plain[0], gz[0]) and np.array_equal(plain[1], gz[1])


def test_real_mnist_shapes(mnist_dir):
    images, labels = load_split(mnist_dir, "test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert sorted(np.unique(labels)) == list(range(10))


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:-100], "truncated"),
    (lambda b: b + b"\0" * 7, "trailing bytes"),
    (lambda b: b"\x00\x00\x09" + b[3:], "bad magic"),
    (lambda b: b[:3] + b"\x02" + b[4:], "dimensions"),
    (lambda b: b[:5], "truncated"),
    (lambda b: b"", "too short"),
])
def test_corrupt_image_file_is_named(tmp_path, mutate, message, write_dataset):
    d = write_dataset(tmp_path)
    path = d / "train-images-idx3-ubyte"
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(DataError, match=message) as e:
        load_split(d, "train")
    assert str(path) in str(e.value)


def test_corrupt_gzip_is_named(tmp_path, write_dataset):
    d = write_dataset(tmp_path, compress=True)
    path = d / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match="cannot read") as e:
        load_split(d, "test")
    assert str(path) in str(e.value)


def test_mismatched_counts(tmp_path, write_dataset, write_idx):
    d = write_dataset(tmp_path)
    write_idx(d / "train-labels-idx1-ubyte", np.zeros(599, np.uint8))
    with pytest.raises(DataError, match="599 labels but .* 600 images"):
        load_split(d, "train")


def test_label_out_of_range(tmp_path, write_dataset, write_idx):
    d = write_dataset(tmp_path)
    write_idx(d / "t10k-labels-idx1-ubyte", np.full(200, 10, np.uint8))
    with pytest.raises(DataError, match="label 10 outside 0..9"):
        load_split(d, "test")


def test_missing_file(tmp_path, write_dataset):
    d = write_dataset(tmp_path)
    (d / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*not found"):
        load_split(d, "test")


def test_missing_data_without_download_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGE_DIGITS_DATA", raising=False)
    with pytest.raises(DataError, match="no mnist IDX files"):
        resolve_data_dir(str(tmp_path), "mnist", download=False)


def test_data_dir_order_is_flag_then_environment_then_default(tmp_path, monkeypatch, write_dataset):
    flag, env, default = (write_dataset(tmp_path / name, 20, 10) for name in ("flag", "env", "data/MNIST/raw"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DATA_ENV, str(env))
    assert resolve_data_dir(str(flag)) == flag
    assert resolve_data_dir(None) == env
    monkeypatch.delenv(DATA_ENV)
    assert resolve_data_dir(None).resolve() == default


def test_a_directory_without_the_files_is_not_passed_over(tmp_path, monkeypatch, write_dataset):
    # $EDGE_DIGITS_DATA names an empty directory while ./data holds MNIST: the user said where, so say it is empty.
    write_dataset(tmp_path / "data/MNIST/raw", 20, 10)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "empty"))
    with pytest.raises(DataError, match=rf"empty: no mnist IDX files here \(from \${DATA_ENV}\)"):
        resolve_data_dir(None)
    monkeypatch.delenv(DATA_ENV)
    with pytest.raises(DataError, match="FashionMNIST/raw: no fashion-mnist IDX files here"):
        resolve_data_dir(None, "fashion-mnist")


def test_validation_split_is_fixed_by_seed_and_disjoint(tmp_path, write_dataset):
    d = write_dataset(tmp_path)
    a, b, c = (load_splits(d, "mnist", 100, seed) for seed in (1, 1, 2))
    assert len(a.val_x) == 100 and len(a.train_x) == 500
    assert a.val_x.equal(b.val_x) and not a.val_x.equal(c.val_x)
    train_rows = {bytes(x.numpy()) for x in a.train_x}
    assert not any(bytes(x.numpy()) in train_rows for x in a.val_x)


def test_read_idx_rejects_wrong_ndim(tmp_path, write_idx):
    path = write_idx(tmp_path / "x", np.zeros((3, 4), np.uint8))
    with pytest.raises(DataError, match="2 dimensions, expected 3"):
        read_idx(path, 3)


def test_styles_redraw_only_training_ones_and_sevens(mnist_dir):
    plain = load_splits(mnist_dir, "mnist", 5000, seed=0)
    styled = load_splits(mnist_dir, "mnist", 5000, seed=0, styles=0.5)
    changed = (styled.train_x != plain.train_x).flatten(1).any(1)
    ones_sevens = (plain.train_y == 1) | (plain.train_y == 7)
    assert not changed[~ones_sevens].any()
    assert 0.45 < changed[ones_sevens].float().mean() < 0.55
    assert (styled.train_x.flatten(1).sum(1) >= plain.train_x.flatten(1).sum(1)).all()  # strokes added, none erased
    assert np.array_equal(styled.val_x, plain.val_x) and np.array_equal(styled.test_x, plain.test_x)


def test_a_crossed_seven_gains_a_short_bar(mnist_dir):
    images, labels = load_split(mnist_dir, "train")
    sevens = images[labels == 7][:200]
    crossed = restyle(sevens, np.full(len(sevens), 7), share=1.0, seed=3)
    added = (crossed.astype(int) - sevens) > 64
    rows_with_bar = added.any(2).sum(1)  # a bar is short: it adds ink on a few rows only
    assert np.median(rows_with_bar) <= 5 and added.any((1, 2)).mean() > 0.95
