"""Data sets, and the input pipeline that holds the study's controlled variables fixed.

Loaders (``load_dataset(name, data_dir=...)``):

- ``cifar10`` / ``cifar100``: from the official binary archives
  (``cifar-10-binary.tar.gz``, ``cifar-100-binary.tar.gz``) placed in ``data_dir``,
  parsed from their byte format (never unpickled); else from a prepared
  tensorflow-datasets copy under ``data_dir``; else downloaded by tensorflow-datasets
  when the network is reachable. Without any of these the loader fails within seconds,
  saying where to put the archive.
- ``digits``: scikit-learn's bundled 8x8 handwritten digits (real images, offline), with
  a fixed stratified train/test split.
- ``synthetic``: generated, learnable images for tests (``synthetic`` or
  ``synthetic-<size>-<channels>-<classes>-<n_train>``).

Controlled variables (what makes cells of a group comparable):

- The order of training examples in epoch ``e`` depends only on ``(seed, e)``:
  ``epoch_order(seed, e, n)``. Batches are consecutive chunks of that order, the last
  partial batch kept (or dropped, ``training.last_batch``), so a batch-16 cell and a
  batch-32 cell see the same examples in the same order.
- Clean training metrics are measured on a fixed subset of the training set,
  ``train_eval_indices(seed, n, size, test_size)``: the same images for every cell of a
  group, never augmented.
- Validation images (``training.validation_size``) are held out of the training set
  before anything else, ``hold_out(ds, size)``: the same images for every run, never
  trained on, measured as the test set; the kept epoch may be chosen on them.
- Augmentation (pad-4 random crop + horizontal flip) is a deterministic function of
  ``(seed, epoch, example)``: ``augment_params(seed, e, n)`` draws one crop offset and one
  flip per example index, not per batch position.
- Images are scaled to [0, 1], padded with zeros (black, as torchvision's RandomCrop),
  cropped, flipped, then normalized with the data set's mean and std.

The numpy functions here are the reference; ``train_dataset`` builds the same batches
as a tf.data pipeline with the whole data set resident in memory, and
``numpy_batches`` builds them in numpy (for backends without TensorFlow).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import socket
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from kerasgen.naming import (  # noqa: F401
    DATASET_HELP,
    DATASET_NAMES,
    TRAIN_SIZES,
    DatasetRef,
    check_dataset_name,
    dataset_ref,
    known_train_size,
    synthetic_args,
)

# The paper's (and bearpaw's) normalization for CIFAR.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
CIFAR_PAD = 4

CIFAR_ARCHIVES = {
    "cifar10": ("cifar-10-binary.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"),
    "cifar100": ("cifar-100-binary.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"),
}
DEFAULT_DATA_DIR = Path("data")

# Tags that make the order and augmentation streams independent of each other.
_ORDER_STREAM = 0x5EED0
_AUGMENT_STREAM = 0xA06
_TRAIN_EVAL_STREAM = 0x7EE7
_VALIDATION_STREAM = 0x7A1


class DataError(RuntimeError):
    """A data set cannot be loaded; the message says what to do."""


@dataclass
class Dataset:
    """A data set held in memory: images as float32 (NHWC, or any ``(n, ...)`` feature
    array), integer labels 0 .. num_classes - 1.

    A data set of your own may return one from its function, to say more than arrays do:
    ``num_classes`` (0: one more than the largest label), the per-channel ``mean`` and
    ``std`` that ``normalize`` applies (default: none), and whether the study's default
    augmentation (pad-crop-flip, ``pad`` pixels) applies to it (default: no)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int = 0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    augment: bool = False  # the data set's default: pad-crop-flip for CIFAR
    pad: int = CIFAR_PAD
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def train_size(self) -> int:
        return int(self.x_train.shape[0])

    def normalize(self, images: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.mean, images.dtype)
        std = np.asarray(self.std, images.dtype)
        return ((images - mean) / std).astype(images.dtype)


# ---------------------------------------------------------------- controlled variables

def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the n training examples in ``epoch``: a function of (seed, epoch) only."""
    rng = np.random.default_rng([_ORDER_STREAM, int(seed), int(epoch)])
    return rng.permutation(n).astype(np.int64)


def augment_params(seed: int, epoch: int, n: int, pad: int = CIFAR_PAD):
    """Per-example crop offsets (dy, dx in [0, 2*pad]) and flips for ``epoch``.

    Indexed by example, not by batch position: example i gets the same augmentation in
    epoch e whatever the batch size and wherever it lands in the order.
    """
    rng = np.random.default_rng([_AUGMENT_STREAM, int(seed), int(epoch)])
    offsets = rng.integers(0, 2 * pad + 1, size=(n, 2), dtype=np.int32)
    flips = rng.random(n) < 0.5
    return offsets[:, 0], offsets[:, 1], flips


def batch_indices(seed: int, epoch: int, n: int, batch_size: int,
                  drop_last: bool = False) -> list[np.ndarray]:
    """The example indices of every batch of ``epoch``. The last partial batch is kept
    (as PyTorch's DataLoader by default) unless ``drop_last``."""
    order = epoch_order(seed, epoch, n)
    stop = (n // batch_size) * batch_size if drop_last else n
    return [order[i:i + batch_size] for i in range(0, stop, batch_size)]


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Batches per epoch: ``ceil(n / batch_size)``, or ``floor`` when the last partial
    batch is dropped."""
    return n // batch_size if drop_last else -(-n // batch_size)


def last_batch_size(n: int, batch_size: int, drop_last: bool = False) -> int:
    """The size of an epoch's last batch (``batch_size`` when it divides ``n``)."""
    rest = n % batch_size
    return batch_size if rest == 0 or drop_last else rest


def train_eval_indices(seed: int, n: int, size: int | str | None, test_size: int) -> np.ndarray:
    """The fixed training subset on which clean training metrics are measured.

    ``size``: a number of images, ``"test"`` (as many as the test set), ``"all"``, or
    0/None (none). The subset depends only on (seed, n, size), so every cell of a group
    is measured on the same images; it is sorted, so evaluation reads the training set
    in its stored order.
    """
    if size in (None, 0):
        return np.zeros(0, np.int64)
    if size == "all":
        return np.arange(n, dtype=np.int64)
    count = min(int(test_size if size == "test" else size), n)
    if count >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng([_TRAIN_EVAL_STREAM, int(seed), int(n)])
    return np.sort(rng.choice(n, size=count, replace=False)).astype(np.int64)


def validation_indices(n: int, size: int) -> np.ndarray:
    """The training images held out for validation (``training.validation_size``):
    ``size`` of the ``n``, chosen from (n, size) alone, so every run of every cell and
    seed holds out the same images; sorted. Empty when ``size`` is 0."""
    if not size:
        return np.zeros(0, np.int64)
    if size >= n:
        raise ValueError(f"validation_size {size} must be smaller than the {n} training "
                         "examples")
    rng = np.random.default_rng([_VALIDATION_STREAM, int(n), int(size)])
    return np.sort(rng.choice(n, size=int(size), replace=False)).astype(np.int64)


def hold_out(ds: "Dataset", size: int) -> tuple["Dataset", np.ndarray]:
    """(the data set without its validation images, their indices in ``ds``'s training
    set). Everything training does (the epoch order, batches, augmentation, the clean
    training subset) then runs on the images left, so validation images are never
    trained on. Computed once per data set and size (kept in ``ds.extra``)."""
    if not size:
        return ds, np.zeros(0, np.int64)
    key = ("hold_out", int(size))
    if key not in ds.extra:
        held = validation_indices(ds.train_size, size)
        keep = np.setdiff1d(np.arange(ds.train_size), held)
        extra = {k: v for k, v in ds.extra.items()
                 if not (isinstance(k, tuple) and k[:1] == ("hold_out",))}
        rest = dataclasses.replace(ds, x_train=ds.x_train[keep], y_train=ds.y_train[keep],
                                   extra={**extra, "validation_size": int(size)})
        ds.extra[key] = (rest, held)
    return ds.extra[key]


def train_eval_arrays(ds: "Dataset", indices: np.ndarray, copies: int = 1):
    """The clean training subset as (x, y) arrays: normalized, never augmented, labels
    repeated for a packed model (evaluated exactly like the test set)."""
    y = ds.y_train[indices].astype(np.int32)
    return ds.normalize(ds.x_train[indices]), ((y,) * copies if copies > 1 else y)


def augment_numpy(images: np.ndarray, dy: np.ndarray, dx: np.ndarray, flips: np.ndarray,
                  pad: int) -> np.ndarray:
    """Reference pad-crop-flip on a batch (numpy)."""
    b, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.empty_like(images)
    for i in range(b):
        crop = padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = crop[:, ::-1] if flips[i] else crop
    return out


def numpy_batches(ds: Dataset, seed: int, epoch: int, batch_size: int,
                  augment: bool | None = None,
                  drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The training batches of ``epoch`` as normalized numpy arrays (the reference)."""
    augment = ds.augment if augment is None else augment
    n = ds.train_size
    if augment:
        dy, dx, flips = augment_params(seed, epoch, n, ds.pad)
    for idx in batch_indices(seed, epoch, n, batch_size, drop_last):
        images = ds.x_train[idx]
        if augment:
            images = augment_numpy(images, dy[idx], dx[idx], flips[idx], ds.pad)
        yield ds.normalize(images), ds.y_train[idx]


def batch_generator(ds: Dataset, seed: int, batch_size: int, initial_epoch: int, epochs: int,
                    copies: int = 1, augment: bool | None = None, drop_last: bool = False):
    """The same stream as ``train_dataset``, as a Python generator of numpy batches: the
    input pipeline for Keras backends without TensorFlow (JAX on a GPU machine)."""
    for epoch in range(initial_epoch, epochs):
        for x, y in numpy_batches(ds, seed, epoch, batch_size, augment, drop_last):
            y = y.astype(np.int32)
            yield x, ((y,) * copies if copies > 1 else y)


def test_arrays(ds: Dataset, copies: int = 1):
    """The normalized test set as (x, y) arrays, labels repeated for a packed model."""
    y = ds.y_test.astype(np.int32)
    return ds.normalize(ds.x_test), ((y,) * copies if copies > 1 else y)


# ---------------------------------------------------------------- tf.data pipeline

def _tf():
    import tensorflow as tf  # imported here: the store, analysis and TUI never need it

    return tf


def pipeline_options():
    """tf.data options for short fits: autotuning off (see docs/speed in README).

    With autotuning on, ``model.fit`` can return seconds after its last batch while the
    autotuner's background thread winds down; a grid of thousands of short fits pays that
    every time. The pipeline below does almost no work per batch, so nothing is lost.
    """
    tf = _tf()
    options = tf.data.Options()
    options.autotune.enabled = False
    options.deterministic = True
    options.experimental_optimization.map_parallelization = False
    return options


def train_dataset(ds: Dataset, seed: int, batch_size: int, initial_epoch: int, epochs: int,
                  copies: int = 1, augment: bool | None = None, drop_last: bool = False):
    """The training batches of epochs ``initial_epoch .. epochs-1`` as one tf.data stream.

    Use with ``model.fit(..., steps_per_epoch=steps_per_epoch(n, batch_size),
    initial_epoch=initial_epoch, epochs=epochs)``: every epoch yields exactly
    ``steps_per_epoch`` batches, so epoch boundaries line up. Labels are repeated for
    each of ``copies`` outputs of a packed model. ``drop_last`` drops each epoch's last
    partial batch (``training.last_batch = "drop"``).
    """
    tf = _tf()
    augment = ds.augment if augment is None else augment
    n, pad = ds.train_size, ds.pad
    images = tf.constant(ds.x_train)  # resident: gathered by index, never copied per epoch
    labels = tf.constant(ds.y_train.astype(np.int32))
    mean = tf.constant(np.asarray(ds.mean, ds.x_train.dtype))
    std = tf.constant(np.asarray(ds.std, ds.x_train.dtype))
    height, width = ds.input_shape[0], ds.input_shape[1]

    def plan(epoch):
        epoch = int(epoch)
        order = epoch_order(seed, epoch, n)
        if augment:
            dy, dx, flips = augment_params(seed, epoch, n, pad)
        else:
            dy = dx = np.zeros(n, np.int32)
            flips = np.zeros(n, bool)
        return order, dy[order], dx[order], flips[order]

    def epoch_batches(epoch):
        order, dy, dx, flips = tf.numpy_function(
            plan, [epoch], [tf.int64, tf.int32, tf.int32, tf.bool], stateful=False
        )
        order.set_shape([n])
        dy.set_shape([n])
        dx.set_shape([n])
        flips.set_shape([n])
        return tf.data.Dataset.from_tensor_slices((order, dy, dx, flips)).batch(
            batch_size, drop_remainder=drop_last)

    def make_batch(order, dy, dx, flips):
        x = tf.gather(images, order)
        if augment:
            x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
            rows = dy[:, None] + tf.range(height)[None, :]
            cols = dx[:, None] + tf.range(width)[None, :]
            x = tf.gather(x, rows, axis=1, batch_dims=1)
            x = tf.gather(x, cols, axis=2, batch_dims=1)
            x = tf.where(flips[:, None, None, None], tf.reverse(x, axis=[2]), x)
        x = (x - mean) / std
        y = tf.gather(labels, order)
        return x, (y,) * copies if copies > 1 else y

    stream = tf.data.Dataset.range(initial_epoch, epochs).flat_map(epoch_batches)
    stream = stream.map(make_batch).prefetch(2)
    return stream.with_options(pipeline_options())


def test_dataset(ds: Dataset, copies: int = 1, batch_size: int = 1000):
    """The test set, normalized, in fixed order (evaluation uses inference-mode BN, so
    its batch size does not change the result)."""
    return evaluation_dataset(*test_arrays(ds, copies), batch_size=batch_size)


def evaluation_dataset(x: np.ndarray, y, batch_size: int = 1000):
    """Arrays (from ``test_arrays`` or ``train_eval_arrays``) as a tf.data stream for
    ``model.evaluate``, in fixed order."""
    tf = _tf()
    stream = tf.data.Dataset.from_tensor_slices((x, y))
    return stream.batch(batch_size).prefetch(2).with_options(pipeline_options())


# ---------------------------------------------------------------- loaders

def load_dataset(name: str, data_dir: str | os.PathLike | None = None,
                 download: bool = True) -> Dataset:
    """Load a data set by name (see module docstring)."""
    ref = dataset_ref(name)
    data_dir = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    if name in CIFAR_ARCHIVES:
        return load_cifar(name, data_dir, download=download)
    if name == "digits":
        return load_digits()
    if ref.kind == "tfds":
        return load_tfds(ref.target, data_dir, download=download)
    if ref.kind == "import":
        return load_imported(ref)
    return load_synthetic(**synthetic_args(name))


# ---------------------------------------------------------------- your own data sets

def load_imported(ref: DatasetRef) -> Dataset:
    """A data set of your own: ``package.module:function`` called with no arguments,
    returning ``(x_train, y_train, x_test, y_test)`` as arrays or a ``Dataset``; checked
    (``check_arrays``) before anything trains."""
    module_name, _, qualname = str(ref.target).partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # noqa: BLE001 - any import failure is the entry's fault
        raise DataError(f"data set {ref.name!r}: {ref.target!r} does not import "
                        f"({type(exc).__name__}: {exc}). Is the package installed, or its "
                        "directory on PYTHONPATH for every worker?") from None
    try:
        got = obj()
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"data set {ref.name!r}: {ref.target}() raised "
                        f"{type(exc).__name__}: {exc}") from exc
    if isinstance(got, Dataset):
        ds = got
        ds.name = ref.name
    elif isinstance(got, (tuple, list)) and len(got) == 4:
        ds = Dataset(ref.name, *got)
    else:
        raise DataError(f"data set {ref.name!r}: {ref.target}() returned "
                        f"{type(got).__name__}; it must return (x_train, y_train, x_test, "
                        "y_test) as arrays, or a kerasgen.Dataset.")
    ds.source = f"import:{ref.target}"
    return check_arrays(ds)


def check_arrays(ds: Dataset) -> Dataset:
    """A data set's arrays checked and made canonical (float32 features, int64 labels, a
    channel axis on 3-D images, ``num_classes`` filled in); DataError naming the data set
    and what is wrong: mismatched lengths, labels out of range or not integers, NaN or
    infinite values, train and test of different shapes, an empty split."""
    where = f"data set {ds.name!r}"
    arrays = {}
    for split in ("train", "test"):
        x = np.asarray(getattr(ds, f"x_{split}"))
        y = np.asarray(getattr(ds, f"y_{split}"))
        if x.ndim < 2 or len(x) == 0:
            raise DataError(f"{where}: x_{split} has shape {x.shape}; it must hold at least one "
                            "example, as (examples, ...) (images: (n, height, width[, channels])).")
        if y.ndim != 1:
            raise DataError(f"{where}: y_{split} has shape {y.shape}; labels are one integer per "
                            "example (0 .. classes - 1), not one-hot rows.")
        if len(x) != len(y):
            raise DataError(f"{where}: x_{split} has {len(x)} examples but y_{split} has {len(y)}.")
        if not np.issubdtype(x.dtype, np.number):
            raise DataError(f"{where}: x_{split} holds {x.dtype}, not numbers.")
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            bad = int(np.flatnonzero((~np.isfinite(x.reshape(len(x), -1))).any(axis=1))[0])
            raise DataError(f"{where}: x_{split} holds NaN or infinite values (example {bad} is "
                            "the first).")
        if not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating)
                                                      and np.all(y == np.round(y)))):
            raise DataError(f"{where}: y_{split} holds {y.dtype} values that are not integers.")
        if x.ndim == 3:
            x = x[..., None]  # (n, height, width) images: one channel
        arrays[split] = (x, y.astype(np.int64))
    (x_train, y_train), (x_test, y_test) = arrays["train"], arrays["test"]
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{where}: x_train's examples have shape {x_train.shape[1:]}, "
                        f"x_test's {x_test.shape[1:]}; they must match.")
    top = int(max(y_train.max(), y_test.max()))
    classes = int(ds.num_classes) or top + 1
    low = int(min(y_train.min(), y_test.min()))
    if low < 0 or top >= classes:
        raise DataError(f"{where}: labels run from {low} to {top}, outside 0 .. "
                        f"{classes - 1} ({classes} classes).")
    if classes < 2:
        raise DataError(f"{where}: every label is {top}; a classifier needs two classes or more.")
    ds.x_train, ds.y_train, ds.x_test, ds.y_test = x_train, y_train, x_test, y_test
    ds.num_classes = classes
    if ds.augment and x_train.ndim != 4:
        raise DataError(f"{where}: augment=True needs images (n, height, width, channels); "
                        f"these examples have shape {x_train.shape[1:]}.")
    return ds


def load_tfds(target: str, data_dir: Path, download: bool = True) -> Dataset:
    """An image-classification data set of tensorflow-datasets by name (``NAME`` or
    ``NAME/CONFIG``), read through the same path as CIFAR's copy: images scaled to [0, 1],
    the train and test splits, per-channel mean and std of the training images. Fails at
    once, naming what to do, when it is not prepared under ``<data_dir>/tfds`` and the
    network is unreachable; and when it is not image classification."""
    import tensorflow_datasets as tfds

    tfds_dir = Path(data_dir) / "tfds"
    name = f"tfds:{target}"
    try:
        builder = tfds.builder(target, data_dir=str(tfds_dir))
    except Exception as exc:  # noqa: BLE001 - DatasetNotFoundError and friends
        raise DataError(f"data set {name!r}: tensorflow-datasets knows no {target!r} "
                        f"({type(exc).__name__}); see tfds.list_builders().") from None
    features = builder.info.features
    keys = list(features.keys()) if hasattr(features, "keys") else []
    label = features["label"] if "label" in keys else None
    if "image" not in keys or label is None or not hasattr(label, "num_classes"):
        raise DataError(f"data set {name!r} is not image classification: kerasgen needs "
                        "an 'image' feature and a 'label' class label (its features: "
                        f"{', '.join(keys) or features}).")
    if not _tfds_prepared(builder):
        hint = (f"data set {name!r} is not prepared under {tfds_dir}/: run "
                f"tfds.builder({target!r}, data_dir={str(tfds_dir)!r}).download_and_prepare() "
                "on a machine with the network, and copy the directory here (or pass "
                "--data-dir DIR).")
        if not download:
            raise DataError(hint)
        if not _network_reachable("storage.googleapis.com"):
            raise DataError(hint + " The network is unreachable, so it cannot be downloaded.")
        builder.download_and_prepare()
    splits = set(builder.info.splits.keys())  # empty when the metadata does not say
    test_split = "validation" if splits and "test" not in splits else "test"
    if splits and ("train" not in splits or test_split not in splits):
        raise DataError(f"data set {name!r} has splits {sorted(splits)}; kerasgen needs "
                        "'train' and 'test' (or 'validation').")
    x_train, y_train = _tfds_split(tfds, builder, "train")
    x_test, y_test = _tfds_split(tfds, builder, test_split)
    channels = x_train.shape[-1]
    ds = Dataset(name, x_train, y_train, x_test, y_test, int(label.num_classes),
                 mean=tuple(float(m) for m in x_train.reshape(-1, channels).mean(axis=0)),
                 std=tuple(float(s) for s in x_train.reshape(-1, channels).std(axis=0) + 1e-8),
                 source=f"tensorflow-datasets:{tfds_dir}")
    return check_arrays(ds)


def load_synthetic(size: int = 8, channels: int = 3, num_classes: int = 10,
                   n_train: int = 256, n_test: int | None = None, seed: int = 0) -> Dataset:
    """Learnable generated images: a per-class template plus noise, values in [0, 1]."""
    n_test = n_test if n_test is not None else max(num_classes, n_train // 4)
    rng = np.random.default_rng(seed)
    templates = rng.random((num_classes, size, size, channels), dtype=np.float32)

    def draw(n):
        y = np.arange(n) % num_classes
        rng.shuffle(y)
        noise = rng.normal(0, 0.25, (n, size, size, channels)).astype(np.float32)
        x = np.clip(templates[y] + noise, 0.0, 1.0).astype(np.float32)
        return x, y.astype(np.int64)

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    name = "synthetic" if (size, channels, num_classes, n_train) == (8, 3, 10, 256) else \
        f"synthetic-{size}-{channels}-{num_classes}-{n_train}"
    return Dataset(name, x_train, y_train, x_test, y_test, num_classes,
                   *_channel_stats(x_train), augment=False, source="generated")


def load_digits(test_size: int = 450) -> Dataset:
    """scikit-learn's 1,797 handwritten digits (8x8, 16 grey levels) with a fixed
    stratified split: 1,347 training and 450 test images."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[..., None]
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, stratify=y, random_state=0
    )
    return Dataset("digits", x_train, y_train, x_test, y_test, 10, *_channel_stats(x_train),
                   augment=False, pad=1, source="sklearn.datasets.load_digits")


def _channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = x.mean(axis=(0, 1, 2))
    std = x.std(axis=(0, 1, 2))
    std = np.where(std > 0, std, 1.0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def load_cifar(name: str, data_dir: Path, download: bool = True) -> Dataset:
    archive_name, url = CIFAR_ARCHIVES[name]
    archive = Path(data_dir) / archive_name
    if archive.exists():
        x_train, y_train, x_test, y_test = read_cifar_archive(archive, name)
        source = str(archive)
    else:
        x_train, y_train, x_test, y_test, source = _load_cifar_tfds(
            name, Path(data_dir), archive, url, download
        )
    return Dataset(name, x_train, y_train, x_test, y_test,
                   10 if name == "cifar10" else 100, CIFAR_MEAN, CIFAR_STD,
                   augment=True, pad=CIFAR_PAD, source=source)


def read_cifar_archive(path: Path, name: str):
    """Parse an official CIFAR binary archive (``.tar.gz``) from its byte format.

    CIFAR-10 records are ``<1 byte label><3072 bytes image>``; CIFAR-100 records are
    ``<1 byte coarse label><1 byte fine label><3072 bytes image>`` (fine labels used).
    Images are stored channel-major (1024 red, 1024 green, 1024 blue), rows top first.
    """
    if name == "cifar10":
        label_bytes, test_files = 1, ["test_batch.bin"]
        train_files = [f"data_batch_{i}.bin" for i in range(1, 6)]
    else:
        label_bytes, train_files, test_files = 2, ["train.bin"], ["test.bin"]
    record = label_bytes + 3072
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                base = os.path.basename(member.name)
                if member.isfile() and base in train_files + test_files:
                    found[base] = tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(
            f"{path} is not a readable CIFAR binary archive ({exc}). Download it again "
            f"from {CIFAR_ARCHIVES[name][1]}."
        ) from exc
    missing = [f for f in train_files + test_files if f not in found]
    if missing:
        raise DataError(
            f"{path} lacks {', '.join(missing)}: is it the *binary* version "
            f"({CIFAR_ARCHIVES[name][0]}), not the Python or MATLAB one?"
        )

    def parse(files):
        # Check each file on its own: a short file followed by a long one can add up to a
        # whole number of records, and every record after the short one would be misread.
        for f in files:
            if len(found[f]) % record:
                raise DataError(f"{path}: {f} is truncated or corrupt ({len(found[f])} "
                                f"bytes is not a multiple of the record size {record}).")
        blob = b"".join(found[f] for f in files)
        if not blob:
            raise DataError(f"{path}: {', '.join(files)} hold no records: the archive is "
                            f"empty or damaged. Download it again from "
                            f"{CIFAR_ARCHIVES[name][1]}.")
        raw = np.frombuffer(blob, np.uint8).reshape(-1, record)
        # Every label byte in range (coarse 0-19 and fine 0-99 for CIFAR-100, 0-9 for
        # CIFAR-10): a damaged archive is refused here, not as a TensorFlow error in
        # every cell.
        limits = (10,) if name == "cifar10" else (20, 100)
        for column, limit in enumerate(limits):
            bad = np.flatnonzero(raw[:, column] >= limit)
            if bad.size:
                index = int(bad[0])
                start = 0
                for f in files:
                    count = len(found[f]) // record
                    if index < start + count:
                        break
                    start += count
                what = "label" if name == "cifar10" else ("coarse label", "fine label")[column]
                raise DataError(
                    f"{path}: record {index - start} of {f} has {what} {int(raw[index, column])}"
                    f", outside 0-{limit - 1} ({bad.size} such record(s)): the archive is "
                    f"damaged. Download it again from {CIFAR_ARCHIVES[name][1]}.")
        labels = raw[:, label_bytes - 1].astype(np.int64)
        images = raw[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return (images.astype(np.float32) / 255.0), labels

    x_train, y_train = parse(train_files)
    x_test, y_test = parse(test_files)
    return x_train, y_train, x_test, y_test


def _network_reachable(host: str = "www.cs.toronto.edu", port: int = 443,
                       timeout: float = 3.0) -> bool:
    """Whether ``host:port`` accepts a connection within ``timeout`` seconds in all.

    The socket timeout does not bound the name lookup (``getaddrinfo`` can block for
    many seconds on a machine without a resolver), so the attempt runs in a daemon thread
    and is abandoned after ``timeout``.
    """
    result: list[bool] = []

    def attempt():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, name="kerasgen-network-check", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result) and result[0]


def _load_cifar_tfds(name: str, data_dir: Path, archive: Path, url: str, download: bool):
    """Load CIFAR through tensorflow-datasets; fail fast when it cannot work offline."""
    import tensorflow_datasets as tfds

    tfds_dir = data_dir / "tfds"
    builder = tfds.builder(name, data_dir=str(tfds_dir))
    prepared = _tfds_prepared(builder)
    if not prepared:
        hint = (
            f"{name} not found. Put the official binary archive {archive.name} "
            f"(from {url}) in {data_dir}/ (or pass --data-dir DIR), or a prepared "
            f"tensorflow-datasets copy under {tfds_dir}/."
        )
        if not download:
            raise DataError(hint)
        if not _network_reachable():
            raise DataError(hint + " The network is unreachable, so it cannot be downloaded.")
        builder.download_and_prepare()
    x_train, y_train = _tfds_split(tfds, builder, "train")
    x_test, y_test = _tfds_split(tfds, builder, "test")
    return x_train, y_train, x_test, y_test, f"tensorflow-datasets:{tfds_dir}"


def _tfds_split(tfds, builder, split: str, chunk: int = 10_000):
    """A split as (float32 images in [0, 1], int64 labels), read in fixed-size batches.

    Not ``batch_size=-1``: that batches by the split sizes recorded in the builder's
    metadata, and where they are unknown (a mocked builder) TFDS batches by
    ``sys.maxsize``, which aborts the process.
    """
    images, labels = [], []
    for batch in tfds.as_numpy(builder.as_dataset(split=split, batch_size=chunk,
                                                  shuffle_files=False)):
        images.append(batch["image"])
        labels.append(batch["label"])
    if not images:
        raise DataError(f"The tensorflow-datasets copy of {builder.name} has no {split!r} "
                        "examples.")
    x = np.concatenate(images).astype(np.float32) / 255.0
    y = np.concatenate(labels).astype(np.int64)
    return x, y


def _tfds_prepared(builder) -> bool:
    try:
        return bool(builder.is_prepared())
    except AttributeError:  # older tensorflow-datasets
        return Path(builder.data_dir).exists()


__all__ = [
    "CIFAR_MEAN", "CIFAR_STD", "DATASET_HELP", "DataError", "Dataset", "augment_numpy",
    "check_arrays", "load_imported", "load_tfds",
    "augment_params", "batch_indices", "check_dataset_name", "epoch_order", "last_batch_size",
    "load_cifar", "load_dataset", "load_digits", "load_synthetic", "numpy_batches",
    "read_cifar_archive", "steps_per_epoch", "test_dataset", "train_dataset",
    "hold_out", "train_eval_arrays", "train_eval_indices", "validation_indices",
]
