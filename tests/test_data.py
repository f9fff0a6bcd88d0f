"""Data sets and the input pipeline that holds the study's controlled variables fixed."""

from __future__ import annotations

import io
import socket
import tarfile
import threading
import time

import numpy as np
import pytest

from kerasgen import data as D  # not `from ... import test_dataset`: pytest would collect it

# ---------------------------------------------------------------- CIFAR binary archives

CIFAR10_TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]


def cifar_record(image_hwc: np.ndarray, *labels: int) -> bytes:
    """One record of the official binary format: label byte(s), then the red, green and
    blue 32x32 planes, each row-major."""
    assert image_hwc.shape == (32, 32, 3) and image_hwc.dtype == np.uint8
    return bytes(labels) + image_hwc.transpose(2, 0, 1).tobytes()


def write_tar_gz(path, members: dict[str, bytes], order=None):
    with tarfile.open(path, "w:gz") as tar:
        for name in order or list(members):
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            tar.addfile(info, io.BytesIO(members[name]))


def make_cifar10(tmp_path, per_file=3, seed=0, order=None, edit=None):
    """Write cifar-10-binary.tar.gz; return the expected (x_train, y_train, x_test, y_test)
    as uint8 HWC images and labels."""
    rng = np.random.default_rng(seed)
    files = CIFAR10_TRAIN + ["test_batch.bin"]
    images = {f: rng.integers(0, 256, (per_file, 32, 32, 3), dtype=np.uint8) for f in files}
    labels = {f: rng.integers(0, 10, per_file) for f in files}
    blobs = {f"cifar-10-batches-bin/{f}": b"".join(
        cifar_record(images[f][i], int(labels[f][i])) for i in range(per_file)) for f in files}
    if edit:
        edit(blobs)
    write_tar_gz(tmp_path / "cifar-10-binary.tar.gz", blobs,
                 order=[f"cifar-10-batches-bin/{f}" for f in order] if order else None)
    return (np.concatenate([images[f] for f in CIFAR10_TRAIN]),
            np.concatenate([labels[f] for f in CIFAR10_TRAIN]),
            images["test_batch.bin"], labels["test_batch.bin"])


def test_cifar10_archive_decodes_hwc_pixels_and_labels_exactly(tmp_path):
    x_train, y_train, x_test, y_test = make_cifar10(tmp_path)
    ds = D.load_dataset("cifar10", data_dir=tmp_path)
    assert ds.x_train.shape == (15, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
    assert ds.x_train.dtype == np.float32 and ds.input_shape == (32, 32, 3)
    np.testing.assert_array_equal(ds.y_train, y_train)
    np.testing.assert_array_equal(ds.y_test, y_test)
    np.testing.assert_allclose(ds.x_train, x_train / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_allclose(ds.x_test, x_test / 255.0, rtol=0, atol=1e-7)
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0
    assert ds.num_classes == 10 and ds.source.endswith("cifar-10-binary.tar.gz")


def test_cifar10_pixel_comes_from_channel_plane_row_major_byte_offset(tmp_path):
    # Hand-placed bytes, independent of the numpy transpose used above.
    record = bytearray(1 + 3072)
    record[0] = 7
    # (row 1, col 2, red), (row 2, col 1, green), (row 31, col 0, blue)
    for row, col, channel, value in [(1, 2, 0, 255), (2, 1, 1, 51), (31, 0, 2, 102)]:
        record[1 + channel * 1024 + row * 32 + col] = value
    blank = bytes(1 + 3072)
    blobs = {f"cifar-10-batches-bin/{f}": blank for f in CIFAR10_TRAIN}
    blobs["cifar-10-batches-bin/test_batch.bin"] = blank + bytes(record)
    write_tar_gz(tmp_path / "cifar-10-binary.tar.gz", blobs)
    ds = D.load_dataset("cifar10", data_dir=tmp_path)
    image = ds.x_test[1]
    assert ds.y_test.tolist() == [0, 7]
    assert image[1, 2, 0] == 1.0
    assert image[2, 1, 1] == pytest.approx(0.2)
    assert image[31, 0, 2] == pytest.approx(0.4)
    assert np.count_nonzero(image) == 3 and np.count_nonzero(ds.x_test[0]) == 0


def test_cifar10_training_examples_follow_batch_file_order_not_archive_order(tmp_path):
    order = ["test_batch.bin"] + CIFAR10_TRAIN[::-1]
    x_train, y_train, _, _ = make_cifar10(tmp_path, order=order, seed=3)
    ds = D.load_dataset("cifar10", data_dir=tmp_path)
    np.testing.assert_array_equal(ds.y_train, y_train)
    np.testing.assert_allclose(ds.x_train, x_train / 255.0, atol=1e-7)


def test_cifar100_archive_uses_fine_labels_and_decodes_pixels(tmp_path):
    rng = np.random.default_rng(1)
    split = {}
    for name, n in (("train.bin", 4), ("test.bin", 3)):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        fine = rng.integers(20, 100, n)
        coarse = (fine // 5 + 1) % 20  # never equal to the fine label here
        assert np.all(coarse != fine)
        split[name] = (images, fine, b"".join(
            cifar_record(images[i], int(coarse[i]), int(fine[i])) for i in range(n)))
    write_tar_gz(tmp_path / "cifar-100-binary.tar.gz",
                 {f"cifar-100-binary/{k}": v[2] for k, v in split.items()})
    ds = D.load_dataset("cifar100", data_dir=tmp_path)
    assert ds.num_classes == 100
    np.testing.assert_array_equal(ds.y_train, split["train.bin"][1])
    np.testing.assert_array_equal(ds.y_test, split["test.bin"][1])
    np.testing.assert_allclose(ds.x_train, split["train.bin"][0] / 255.0, atol=1e-7)
    np.testing.assert_allclose(ds.x_test, split["test.bin"][0] / 255.0, atol=1e-7)
    assert ds.x_train.dtype == np.float32


def test_cifar_data_sets_use_paper_normalization_and_pad4_augmentation(tmp_path):
    make_cifar10(tmp_path)
    ds = D.load_dataset("cifar10", data_dir=tmp_path)
    assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.std == (0.2023, 0.1994, 0.2010)
    assert ds.augment is True and ds.pad == 4


def test_cifar_normalization_constants_equal_the_papers():
    assert D.CIFAR_MEAN == (0.4914, 0.4822, 0.4465)
    assert D.CIFAR_STD == (0.2023, 0.1994, 0.2010)
    assert D.CIFAR_PAD == 4


def test_truncated_record_file_raises_data_error_naming_it(tmp_path):
    def truncate(blobs):
        key = "cifar-10-batches-bin/data_batch_3.bin"
        blobs[key] = blobs[key][:-10]
    make_cifar10(tmp_path, edit=truncate)
    with pytest.raises(D.DataError, match=r"data_batch_3\.bin is truncated"):
        D.load_dataset("cifar10", data_dir=tmp_path)


def test_misaligned_file_is_detected_even_when_total_is_whole_records(tmp_path):
    # 10 bytes short in one file and 10 extra in the next: the concatenation is a whole
    # number of records, but every record after the short one would be misread.
    def shift(blobs):
        a, b = "cifar-10-batches-bin/data_batch_2.bin", "cifar-10-batches-bin/data_batch_3.bin"
        blobs[a] = blobs[a][:-10]
        blobs[b] = blobs[b] + bytes(10)
    make_cifar10(tmp_path, edit=shift)
    with pytest.raises(D.DataError, match=r"data_batch_2\.bin"):
        D.load_dataset("cifar10", data_dir=tmp_path)


def test_a_label_out_of_range_refuses_the_archive_naming_file_and_record(tmp_path):
    record = 1 + 3072

    def corrupt(blobs):
        key = "cifar-10-batches-bin/data_batch_4.bin"
        damaged = bytearray(blobs[key])
        damaged[2 * record] = 200  # the label byte of record 2
        blobs[key] = bytes(damaged)
    make_cifar10(tmp_path, edit=corrupt)
    with pytest.raises(D.DataError, match=r"record 2 of data_batch_4\.bin has label 200, "
                                          r"outside 0-9"):
        D.load_dataset("cifar10", data_dir=tmp_path)


def test_archive_missing_a_member_raises_data_error_naming_it(tmp_path):
    make_cifar10(tmp_path, edit=lambda blobs: blobs.pop("cifar-10-batches-bin/test_batch.bin"))
    with pytest.raises(D.DataError, match=r"lacks test_batch\.bin"):
        D.load_dataset("cifar10", data_dir=tmp_path)


def test_unreadable_archive_raises_data_error_naming_it(tmp_path):
    (tmp_path / "cifar-100-binary.tar.gz").write_bytes(b"not a gzip file")
    with pytest.raises(D.DataError, match=r"cifar-100-binary\.tar\.gz is not a readable"):
        D.load_dataset("cifar100", data_dir=tmp_path)


# ---------------------------------------------------------------- tensorflow-datasets path

@pytest.fixture
def mocked_tfds():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        yield tfds


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_without_archive_cifar_downloads_through_tfds(mocked_tfds, monkeypatch, tmp_path,
                                                      name, classes):
    monkeypatch.setattr(D, "_network_reachable", lambda *a, **k: True)
    ds = D.load_dataset(name, data_dir=tmp_path)
    assert ds.source.startswith("tensorflow-datasets:")
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.shape == (12, 32, 32, 3) and x.dtype == np.float32
        assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5  # scaled from 0..255
        assert y.dtype == np.int64 and 0 <= y.min() and y.max() < classes
    assert ds.num_classes == classes and ds.mean == D.CIFAR_MEAN


def test_prepared_tfds_copy_is_used_without_network_check(mocked_tfds, monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise AssertionError("network checked although a prepared copy exists")
    monkeypatch.setattr(D, "_network_reachable", no_network)
    monkeypatch.setattr(D, "_tfds_prepared", lambda builder: True)
    ds = D.load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert ds.x_train.shape == (12, 32, 32, 3) and ds.y_test.shape == (12,)


# ---------------------------------------------------------------- failing fast without data

def test_no_data_and_unreachable_network_fails_fast_naming_archive_and_dir(monkeypatch,
                                                                           tmp_path):
    monkeypatch.setattr(D, "_network_reachable", lambda *a, **k: False)
    start = time.monotonic()
    with pytest.raises(D.DataError) as info:
        D.load_dataset("cifar10", data_dir=tmp_path)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "cifar-10-binary.tar.gz" in message and str(tmp_path) in message
    assert "unreachable" in message


def test_no_data_with_real_network_check_fails_within_seconds(tmp_path):
    if D._network_reachable():
        pytest.skip("the network is reachable here: the loader would download CIFAR-100")
    start = time.monotonic()
    with pytest.raises(D.DataError, match=r"cifar-100-binary\.tar\.gz") as info:
        D.load_dataset("cifar100", data_dir=tmp_path)
    assert time.monotonic() - start < 10
    assert str(tmp_path) in str(info.value)


def test_download_false_fails_without_checking_the_network(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise AssertionError("network checked with download=False")
    monkeypatch.setattr(D, "_network_reachable", no_network)
    with pytest.raises(D.DataError, match=r"cifar-10-binary\.tar\.gz"):
        D.load_dataset("cifar10", data_dir=tmp_path, download=False)


def test_network_check_gives_up_after_timeout_even_if_name_lookup_hangs(monkeypatch):
    release = threading.Event()

    def hanging_connect(*args, **kwargs):  # a resolver that never answers
        release.wait(30)
        raise OSError("gave up")
    monkeypatch.setattr(socket, "create_connection", hanging_connect)
    try:
        start = time.monotonic()
        assert D._network_reachable(timeout=0.5) is False
        assert time.monotonic() - start < 3
    finally:
        release.set()


# ---------------------------------------------------------------- digits and synthetic

@pytest.fixture(scope="module")
def digits():
    return D.load_dataset("digits")


def test_digits_has_1347_train_450_test_8x8x1_in_10_classes(digits):
    assert digits.x_train.shape == (1347, 8, 8, 1) and digits.x_test.shape == (450, 8, 8, 1)
    assert digits.y_train.shape == (1347,) and digits.y_test.shape == (450,)
    assert digits.num_classes == 10
    assert set(np.unique(digits.y_train)) == set(range(10)) == set(np.unique(digits.y_test))
    assert digits.x_train.dtype == np.float32
    for x in (digits.x_train, digits.x_test):
        assert x.min() == 0.0 and x.max() == 1.0
    assert D.known_train_size("digits") == 1347


def test_digits_split_is_stratified(digits):
    overall = np.bincount(np.concatenate([digits.y_train, digits.y_test]), minlength=10)
    test = np.bincount(digits.y_test, minlength=10)
    assert np.all(np.abs(test - overall * 450 / overall.sum()) <= 1)


def test_digits_split_is_fixed_across_loads(digits):
    again = D.load_digits()
    np.testing.assert_array_equal(again.x_train, digits.x_train)
    np.testing.assert_array_equal(again.y_train, digits.y_train)
    np.testing.assert_array_equal(again.x_test, digits.x_test)
    np.testing.assert_array_equal(again.y_test, digits.y_test)


def test_synthetic_name_sets_size_channels_classes_and_train_size():
    ds = D.load_dataset("synthetic-8-3-10-64")
    assert ds.name == "synthetic-8-3-10-64"
    assert ds.x_train.shape == (64, 8, 8, 3) and ds.num_classes == 10
    assert set(np.unique(ds.y_train)) == set(range(10))
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert D.known_train_size("synthetic-8-3-10-64") == 64
    small = D.load_dataset("synthetic-4-1-2-6")
    assert small.x_train.shape == (6, 4, 4, 1) and small.num_classes == 2


@pytest.mark.parametrize("name", ["synthetic-8-3-10", "synthetic-8-3-10-64-1", "synthetic-a-3-10-64",
                                  "synthetic-0-3-10-64", "synthetic-8-3-1-64", "synthetic-8-3-10-0",
                                  "mnist", "CIFAR10"])
def test_bad_data_set_names_raise_and_repeat_the_name(name):
    with pytest.raises(ValueError, match=rf"'{name}'"):
        D.load_dataset(name)


# ---------------------------------------------------------------- order of examples

def test_batches_are_chunks_of_the_epoch_order_whatever_the_batch_size():
    order = D.epoch_order(5, 3, 100)
    assert sorted(order.tolist()) == list(range(100))
    for bs in (16, 32, 7, 100, 128):
        np.testing.assert_array_equal(np.concatenate(D.batch_indices(5, 3, 100, bs)), order)


def test_epoch_order_differs_between_epochs_and_seeds_and_repeats_exactly():
    base = D.epoch_order(0, 0, 100)
    np.testing.assert_array_equal(base, D.epoch_order(0, 0, 100))
    assert not np.array_equal(base, D.epoch_order(0, 1, 100))
    assert not np.array_equal(base, D.epoch_order(1, 0, 100))
    assert not np.array_equal(base, np.arange(100))


def test_last_partial_batch_is_kept():
    assert [len(b) for b in D.batch_indices(0, 0, 100, 32)] == [32, 32, 32, 4]
    assert D.steps_per_epoch(100, 32) == 4 and D.steps_per_epoch(96, 32) == 3
    assert D.last_batch_size(100, 32) == 4 and D.last_batch_size(96, 32) == 32


def test_dropping_the_last_batch_leaves_the_full_batches_of_the_same_order():
    kept = D.batch_indices(0, 0, 100, 32)
    dropped = D.batch_indices(0, 0, 100, 32, drop_last=True)
    assert [len(b) for b in dropped] == [32, 32, 32]
    for a, b in zip(dropped, kept):
        np.testing.assert_array_equal(a, b)
    assert D.steps_per_epoch(100, 32, drop_last=True) == 3
    assert D.last_batch_size(100, 32, drop_last=True) == 32
    # A batch size that divides n: dropping changes nothing.
    assert len(D.batch_indices(0, 0, 96, 32, drop_last=True)) == 3


def test_tf_pipeline_drops_each_epochs_last_batch_when_asked():
    ds = small_dataset(n=40)
    kept = list(D.train_dataset(ds, 3, 16, 0, 2).as_numpy_iterator())
    dropped = list(D.train_dataset(ds, 3, 16, 0, 2, drop_last=True).as_numpy_iterator())
    assert [len(y) for _, y in kept] == [16, 16, 8] * 2
    assert [len(y) for _, y in dropped] == [16, 16] * 2
    reference = [b for e in range(2) for b in D.numpy_batches(ds, 3, e, 16, drop_last=True)]
    for (x, y), (ex, ey) in zip(dropped, reference, strict=True):
        np.testing.assert_allclose(x, ex, atol=1e-6)
        np.testing.assert_array_equal(y, ey)


# ---------------------------------------------------------------- the clean training subset

def test_train_eval_subset_is_fixed_by_the_seed_and_sized_like_the_test_set():
    a = D.train_eval_indices(7, 1000, "test", 200)
    assert len(a) == 200 and len(set(a.tolist())) == 200 and np.all(np.diff(a) > 0)
    assert a.min() >= 0 and a.max() < 1000
    np.testing.assert_array_equal(a, D.train_eval_indices(7, 1000, "test", 200))
    assert not np.array_equal(a, D.train_eval_indices(8, 1000, "test", 200))
    assert len(D.train_eval_indices(7, 1000, 50, 200)) == 50
    np.testing.assert_array_equal(D.train_eval_indices(7, 1000, "all", 200), np.arange(1000))
    assert len(D.train_eval_indices(7, 1000, 0, 200)) == 0
    # A test set larger than the training set: the whole training set.
    np.testing.assert_array_equal(D.train_eval_indices(7, 100, "test", 500), np.arange(100))


def test_train_eval_arrays_are_the_chosen_images_normalized_never_augmented():
    ds = small_dataset(augment=True)
    idx = D.train_eval_indices(1, ds.train_size, "test", 16)
    x, ys = D.train_eval_arrays(ds, idx, copies=2)
    np.testing.assert_allclose(x, ds.normalize(ds.x_train[idx]), atol=0)
    assert len(ys) == 2 and all(np.array_equal(y, ds.y_train[idx]) for y in ys)


# ---------------------------------------------------------------- augmentation

def small_dataset(n=40, n_test=16, size=8, augment=True, pad=3, seed=0):
    rng = np.random.default_rng(seed)
    return D.Dataset(
        "tiny", rng.random((n, size, size, 3), dtype=np.float32), rng.integers(0, 5, n),
        rng.random((n_test, size, size, 3), dtype=np.float32), rng.integers(0, 5, n_test),
        5, D.CIFAR_MEAN, D.CIFAR_STD, augment=augment, pad=pad,
    )


def reference_augment(image, dy, dx, flip, pad):
    """Zero-pad by ``pad``, crop at (dy, dx), then flip left-right: written pixel by pixel."""
    h, w, _ = image.shape
    out = np.zeros_like(image)
    for r in range(h):
        for c in range(w):
            src_c = (w - 1 - c) if flip else c
            sr, sc = r + dy - pad, src_c + dx - pad
            if 0 <= sr < h and 0 <= sc < w:
                out[r, c] = image[sr, sc]
    return out


def augmented_by_example(ds, seed, epoch, batch_size):
    images = {}
    batches = list(D.numpy_batches(ds, seed, epoch, batch_size, augment=True))
    indices = D.batch_indices(seed, epoch, ds.train_size, batch_size)
    assert len(batches) == len(indices)
    for (x, y), idx in zip(batches, indices):
        np.testing.assert_array_equal(y, ds.y_train[idx])
        images.update(zip(idx.tolist(), x))
    return images


def test_augmentation_of_an_example_does_not_depend_on_batch_size_or_position():
    ds = small_dataset()
    by16 = augmented_by_example(ds, seed=4, epoch=2, batch_size=16)
    by32 = augmented_by_example(ds, seed=4, epoch=2, batch_size=32)
    assert sorted(by16) == sorted(by32) == list(range(ds.train_size))
    dy, dx, flips = D.augment_params(4, 2, ds.train_size, ds.pad)
    for i in range(ds.train_size):
        np.testing.assert_array_equal(by16[i], by32[i])
        expected = ds.normalize(reference_augment(ds.x_train[i], dy[i], dx[i], flips[i], ds.pad))
        np.testing.assert_allclose(by16[i], expected, atol=1e-6)


def test_augmentation_changes_across_epochs():
    ds = small_dataset()
    e0 = augmented_by_example(ds, seed=4, epoch=0, batch_size=16)
    e1 = augmented_by_example(ds, seed=4, epoch=1, batch_size=16)
    changed = sum(not np.array_equal(e0[i], e1[i]) for i in range(ds.train_size))
    assert changed >= 0.8 * ds.train_size


def test_augment_params_are_deterministic_offsets_in_0_to_2pad_and_half_flipped():
    dy, dx, flips = D.augment_params(7, 1, 20_000, pad=4)
    again = D.augment_params(7, 1, 20_000, pad=4)
    for a, b in zip((dy, dx, flips), again):
        np.testing.assert_array_equal(a, b)
    for offsets in (dy, dx):
        assert offsets.min() == 0 and offsets.max() == 8
        assert len(np.unique(offsets)) == 9
    assert not np.array_equal(dy, dx)
    assert 0.48 < flips.mean() < 0.52
    assert not np.array_equal(flips, D.augment_params(7, 2, 20_000, pad=4)[2])


def test_padding_is_black_before_normalization():
    image = np.ones((1, 4, 4, 1), np.float32)
    out = D.augment_numpy(image, np.array([0]), np.array([0]), np.array([False]), pad=2)
    expected = np.zeros((4, 4), np.float32)
    expected[2:, 2:] = 1.0
    np.testing.assert_array_equal(out[0, :, :, 0], expected)


def test_augmentation_off_gives_plain_normalized_images_in_epoch_order():
    ds = small_dataset()
    (x, y), = list(D.numpy_batches(ds, 1, 0, 40, augment=False))
    order = D.epoch_order(1, 0, 40)
    np.testing.assert_allclose(x, (ds.x_train[order] - np.float32(D.CIFAR_MEAN))
                               / np.float32(D.CIFAR_STD), atol=1e-6)
    np.testing.assert_array_equal(y, ds.y_train[order])


# ---------------------------------------------------------------- tf.data pipeline

@pytest.mark.parametrize("augment", [True, False])
def test_tf_pipeline_yields_the_numpy_reference_batches(augment):
    ds = small_dataset(augment=True)
    seed, bs, initial_epoch, epochs = 9, 16, 2, 5
    stream = list(D.train_dataset(ds, seed, bs, initial_epoch, epochs,
                                  augment=augment).as_numpy_iterator())
    expected = [b for e in range(initial_epoch, epochs)
                for b in D.numpy_batches(ds, seed, e, bs, augment=augment)]
    assert len(stream) == len(expected) == (epochs - initial_epoch) * D.steps_per_epoch(40, bs)
    for (x, y), (ex, ey) in zip(stream, expected):
        assert x.shape == ex.shape and x.dtype == np.float32
        np.testing.assert_allclose(x, ex, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(y, ey)


def test_tf_pipeline_follows_the_data_sets_augment_default():
    ds = small_dataset(augment=False)
    stream = list(D.train_dataset(ds, 0, 32, 0, 1).as_numpy_iterator())
    expected = list(D.numpy_batches(ds, 0, 0, 32))
    for (x, _), (ex, _) in zip(stream, expected, strict=True):
        np.testing.assert_allclose(x, ex, atol=1e-6)


def test_tf_pipeline_repeats_labels_for_each_packed_copy():
    ds = small_dataset()
    stream = list(D.train_dataset(ds, 1, 16, 0, 1, copies=3).as_numpy_iterator())
    expected = list(D.numpy_batches(ds, 1, 0, 16))
    assert len(stream) == len(expected) == 3
    for (x, ys), (ex, ey) in zip(stream, expected):
        assert isinstance(ys, tuple) and len(ys) == 3
        for y in ys:
            np.testing.assert_array_equal(y, ey)
        np.testing.assert_allclose(x, ex, atol=1e-6)


def test_test_dataset_is_normalized_in_fixed_order():
    ds = small_dataset()
    batches = list(D.test_dataset(ds, batch_size=7).as_numpy_iterator())
    assert [len(y) for _, y in batches] == [7, 7, 2]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    np.testing.assert_allclose(x, (ds.x_test - np.float32(D.CIFAR_MEAN))
                               / np.float32(D.CIFAR_STD), atol=1e-6)
    np.testing.assert_array_equal(y, ds.y_test)
    again = np.concatenate([b[0] for b in D.test_dataset(ds, batch_size=7).as_numpy_iterator()])
    np.testing.assert_array_equal(x, again)
    (_, ys), = list(D.test_dataset(ds, copies=2, batch_size=100).as_numpy_iterator())
    assert len(ys) == 2 and all(np.array_equal(t, ds.y_test) for t in ys)


def test_validation_images_are_the_same_for_every_run_and_never_in_a_training_batch():
    ds = D.load_synthetic(size=8, channels=1, n_train=200)
    again = D.load_synthetic(size=8, channels=1, n_train=200)
    rest, held = D.hold_out(ds, 30)
    other, held_again = D.hold_out(again, 30)
    # Chosen from (n, size) alone: the same images whatever the seed or the load.
    assert np.array_equal(held, held_again) and len(np.unique(held)) == 30
    assert np.array_equal(held, D.validation_indices(200, 30))
    assert D.hold_out(ds, 30)[0] is rest  # computed once per data set and size
    # The data set left has the other 170 images, in their order.
    kept = np.setdiff1d(np.arange(200), held)
    assert rest.train_size == 170 and np.array_equal(rest.x_train, ds.x_train[kept])
    assert np.array_equal(rest.y_train, ds.y_train[kept]) and rest.x_test is ds.x_test
    # Every batch of every epoch, for any seed and batch size, draws from those 170.
    for seed in (0, 1):
        for batch_size in (16, 64):
            for epoch in range(3):
                for idx in D.batch_indices(seed, epoch, rest.train_size, batch_size):
                    assert not np.isin(kept[idx], held).any()
    clean = D.train_eval_indices(0, rest.train_size, "all", 50)
    assert not np.isin(kept[clean], held).any()
    # No validation size: nothing held out.
    assert D.hold_out(ds, 0)[0] is ds and len(D.hold_out(ds, 0)[1]) == 0
