"""Names of the registry, models and data sets, parsed without importing Keras,
TensorFlow or any data (specifications are validated by processes that never train: the
CLI, the dashboard), with the few facts known from a name alone (a data set's size, a
network's batch norm)."""

from __future__ import annotations

import hashlib
import re

FILE_STEM_LENGTH = 60
"""The longest file-name stem made from a name (a study's, a model's): ``file_stem``."""


def file_stem(name: object, length: int = FILE_STEM_LENGTH) -> str:
    """A name as a file-name stem: letters, digits, ``.``, ``_`` and ``-`` only, at most
    ``length`` characters, never empty, never hidden (no leading ``.``). A name that had
    to change (other characters, or too long) ends in ``-`` and 8 hex digits of its
    SHA-1, so two different names never share a file: ``a b`` and ``a/b`` stay apart."""
    text = str(name)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-") or "x"
    if stem == text and len(stem) <= length:
        return stem
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{stem[:max(length - 9, 1)].rstrip('.-')}-{digest}"

VGG_DEPTHS = (11, 13, 16, 19)
# Filters per conv layer, "M" = max pool (configurations A, B, D, E of Simonyan & Zisserman).
VGG_CONFIGS: dict[int, tuple] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
         512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"),
}
RESNET_STAGES = (16, 32, 64)
"""The filters of a CIFAR ResNet's three stages."""

# Batch norm as bearpaw's networks (PyTorch's BatchNorm2d(momentum=0.1, eps=1e-5)):
# running = 0.9 * running + 0.1 * batch. Keras's momentum is the weight of the old value,
# so PyTorch's 0.1 is 0.9 here; the last batch of an epoch weighs 1 - BN_MOMENTUM in the
# moving statistics the test uses.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
MODEL_NAME_HELP = (
    "resnet<depth> with depth = 6n + 2 (resnet8, resnet20, resnet32, resnet56, resnet110, ...) "
    "or vgg<depth>[_nobn][_w<width>] with depth in 11/13/16/19 (vgg19 has batch norm, "
    "vgg19_nobn has not; _w16 narrows the first stage from 64 to 16 filters)"
)
# ASCII digits only, the whole name (``$`` would also accept a trailing newline, ``\d``
# any Unicode digit such as "٨"; Keras would then fail on the name).
_PATTERN = re.compile(r"(resnet|vgg)([0-9]+)(_nobn)?(?:_w([0-9]+))?")


def check_model_name(name: str) -> tuple[str, int, bool]:
    """Parse a registry name into (family, depth, batch_norm); raise ValueError naming it.
    See ``model_width`` for the VGG width suffix."""
    match = _PATTERN.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(f"Unknown model {name!r}: expected {MODEL_NAME_HELP}.")
    family, depth, nobn = match.group(1), int(match.group(2)), bool(match.group(3))
    if match.group(4) is not None:
        if family != "vgg":
            raise ValueError(f"Unknown model {name!r}: only VGG takes a _w<width> suffix.")
        if int(match.group(4)) < 1:
            raise ValueError(f"Unknown model {name!r}: the width must be >= 1.")
    if family == "resnet":
        if nobn:
            raise ValueError(f"Unknown model {name!r}: ResNets always use batch norm.")
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(
                f"Unknown model {name!r}: a CIFAR ResNet's depth must be 6n + 2 "
                f"(8, 20, 32, 44, 56, 110, ...); {depth} is not."
            )
    elif depth not in VGG_DEPTHS:
        raise ValueError(
            f"Unknown model {name!r}: VGG depth must be one of {list(VGG_DEPTHS)}."
        )
    return family, depth, not nobn


def model_width(name: str) -> int:
    """The base width of a VGG name (``vgg11_w16`` -> 16; 64, the paper's, by default)."""
    match = _PATTERN.fullmatch(name)
    return int(match.group(4)) if match and match.group(4) else 64


# ---------------------------------------------------------------- data sets

DATASET_NAMES = ("cifar10", "cifar100", "digits", "synthetic")
DATASET_HELP = (
    "cifar10, cifar100, digits, synthetic or synthetic-<size>-<channels>-<classes>-<n_train>"
)


def check_dataset_name(name: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"Unknown data set {name!r}: expected {DATASET_HELP}.")
    if name in ("cifar10", "cifar100", "digits", "synthetic"):
        return name
    if name.startswith("synthetic-"):
        synthetic_args(name)
        return name
    raise ValueError(f"Unknown data set {name!r}: expected {DATASET_HELP}.")


# Training-set sizes known without loading the data (for validating batch sizes).
TRAIN_SIZES = {"cifar10": 50_000, "cifar100": 50_000, "digits": 1_347, "synthetic": 256}


def known_train_size(name: str) -> int | None:
    """The number of training examples of a data set, or None if unknown before loading."""
    if name in TRAIN_SIZES:
        return TRAIN_SIZES[name]
    if name.startswith("synthetic-"):
        return synthetic_args(name)["n_train"]
    return None


_SYNTHETIC = re.compile(r"synthetic-([0-9]+)-([0-9]+)-([0-9]+)-([0-9]+)")


def synthetic_args(name: str) -> dict:
    if name == "synthetic":
        return {}
    match = _SYNTHETIC.fullmatch(name)  # ASCII digits, nothing after them
    try:
        size, channels, classes, n_train = (int(p) for p in match.groups())  # type: ignore
    except AttributeError:
        raise ValueError(
            f"Unknown data set {name!r}: synthetic data sets are named "
            "synthetic-<size>-<channels>-<classes>-<n_train>, e.g. synthetic-8-3-10-256."
        ) from None
    if min(size, channels, n_train) < 1 or classes < 2:
        raise ValueError(f"Unknown data set {name!r}: sizes must be positive, classes >= 2.")
    # The images are made in memory (float32, training and test sets): refused here, before
    # anything is registered or created, rather than as a MemoryError after.
    # float32 images of the training set, the test set (load_synthetic: max(classes,
    # n_train // 4) images) and one template per class.
    nbytes = 4 * size * size * channels * (n_train + max(classes, n_train // 4) + classes)
    if nbytes > MAX_SYNTHETIC_BYTES:
        raise ValueError(f"The synthetic data set {name!r} would take {nbytes / 2**30:,.1f} GiB "
                         f"of memory, more than the {MAX_SYNTHETIC_BYTES / 2**30:g} GiB a "
                         "generated data set may take; use fewer or smaller images.")
    return {"size": size, "channels": channels, "num_classes": classes, "n_train": n_train}


MAX_SYNTHETIC_BYTES = 8 * 2**30
"""The most memory a generated (synthetic) data set may take."""


