"""Names of the registry, models and data sets, parsed without importing Keras,
TensorFlow or any data (specifications are validated by processes that never train: the
CLI, the dashboard), with the few facts known from a name alone (a data set's size, a
network's batch norm)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

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


# ---------------------------------------------------------------- your own networks

IMPORT_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
                         r":[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
"""``package.module:function``: a builder found by import (models and data sets)."""
ENTRY_POINT_GROUP = "kerasgen.models"
"""Installed packages name their networks in this entry-point group."""
_REGISTERED: dict[str, object] = {}


class ModelError(ValueError):
    """A network of your own cannot be used as asked; the message names the entry."""


def register_model(name: str, build_fn) -> None:
    """Make ``name`` usable in a spec's ``models`` for the network ``build_fn`` builds:
    ``build_fn(input_shape, num_classes, **model_args)`` returns an uncompiled
    ``keras.Model`` whose output is one logit per class. Registered in this process; a
    worker process (``--workers``, Ray) finds it by the function's import path, which the
    study records (``Spec.model_targets``): define it at module level in an importable
    module. Raises ValueError for a name a built-in or an import path already means."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", name):
        raise ValueError("a registered model name is a word (letters, digits, _ . -; starting "
                         f"with a letter; at most 64). Received: {name!r}")
    if _PATTERN.fullmatch(name):
        raise ValueError(f"{name!r} is a built-in network's name; register yours under "
                         "another name")
    if not callable(build_fn):
        raise ValueError(f"register_model({name!r}, ...) needs a callable that builds the "
                         f"network. Received: {build_fn!r}")
    _REGISTERED[name] = build_fn


def registered_builder(name: str):
    """The builder registered under ``name`` in this process, or None."""
    return _REGISTERED.get(name)


def function_target(fn) -> str | None:
    """``module:qualname`` of a function a fresh process can import, else None (defined
    in ``__main__``, in a notebook, inside another function, or a lambda)."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        return None
    return f"{module}:{qualname}"


def entry_point_models() -> dict[str, str]:
    """Networks that installed packages name in the ``kerasgen.models`` entry points:
    name -> ``module:function``."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


@dataclass(frozen=True)
class ModelRef:
    """A ``models`` entry parsed once: a built-in network (family, depth, batch norm,
    width), an import path (``target``), or a registered name (``target``: its import
    path where one exists)."""

    name: str
    kind: str  # "resnet" | "vgg" | "import" | "registered"
    depth: int | None = None
    batch_norm: bool | None = None
    width: int | None = None
    target: str | None = None
    args: tuple = ()  # the spec's model_args for it, as sorted (name, value) pairs

    @property
    def builtin(self) -> bool:
        return self.kind in ("resnet", "vgg")

    def with_args(self, args: dict | None) -> "ModelRef":
        from dataclasses import replace

        return replace(self, args=tuple(sorted((args or {}).items())))


def model_ref(name: str, targets: dict | None = None) -> ModelRef:
    """Parse a ``models`` entry; raise ValueError naming it. ``targets``: name -> import
    path recorded with a study (``Spec.model_targets``), for a name registered in another
    process."""
    if isinstance(name, str) and _PATTERN.fullmatch(name):
        family, depth, batch_norm = check_model_name(name)
        return ModelRef(name, family, depth, batch_norm, model_width(name) if family == "vgg"
                        else None)
    if isinstance(name, str) and IMPORT_PATH.fullmatch(name):
        return ModelRef(name, "import", target=name)
    if isinstance(name, str):
        fn = registered_builder(name)
        if fn is not None:
            return ModelRef(name, "registered", target=function_target(fn))
        target = (targets or {}).get(name) or entry_point_models().get(name)
        if target:
            return ModelRef(name, "registered", target=target)
    raise ValueError(f"Unknown model {name!r}: expected {MODEL_NAME_HELP}; or your own network "
                     "as 'package.module:function', or a name given to "
                     "kerasgen.register_model (or a 'kerasgen.models' entry point).")


def model_width(name: str) -> int:
    """The base width of a VGG name (``vgg11_w16`` -> 16; 64, the paper's, by default)."""
    match = _PATTERN.fullmatch(name)
    return int(match.group(4)) if match and match.group(4) else 64


# ---------------------------------------------------------------- data sets

DATASET_NAMES = ("cifar10", "cifar100", "digits", "synthetic")
DATASET_HELP = (
    "cifar10, cifar100, digits, synthetic or synthetic-<size>-<channels>-<classes>-<n_train>, "
    "tfds:NAME[/CONFIG] (an image-classification data set of tensorflow-datasets), or your "
    "own as 'package.module:function' returning (x_train, y_train, x_test, y_test) or a "
    "kerasgen.Dataset"
)


@dataclass(frozen=True)
class DatasetRef:
    """A ``datasets`` entry parsed once: ``kind`` is "cifar", "digits", "synthetic",
    "tfds" (``target``: NAME or NAME/config) or "import" (``target``: module:function)."""

    name: str
    kind: str
    target: str | None = None

    @property
    def builtin(self) -> bool:
        return self.kind in ("cifar", "digits", "synthetic")


_TFDS = re.compile(r"tfds:([a-z0-9_]+(?:/[A-Za-z0-9_.\-]+)?(?::[0-9.]+)?)")


def dataset_ref(name: str) -> DatasetRef:
    """Parse a ``datasets`` entry; raise ValueError naming it."""
    if not isinstance(name, str):
        raise ValueError(f"Unknown data set {name!r}: expected {DATASET_HELP}.")
    if name in ("cifar10", "cifar100"):
        return DatasetRef(name, "cifar")
    if name == "digits":
        return DatasetRef(name, "digits")
    if name == "synthetic" or name.startswith("synthetic-"):
        synthetic_args(name)
        return DatasetRef(name, "synthetic")
    match = _TFDS.fullmatch(name)
    if match:
        return DatasetRef(name, "tfds", match.group(1))
    if name.startswith("tfds:"):
        raise ValueError(f"Unknown data set {name!r}: a tensorflow-datasets name is "
                         "tfds:NAME or tfds:NAME/CONFIG (lower-case, as tfds.list_builders() "
                         "prints them), e.g. tfds:mnist or tfds:cifar10.")
    if IMPORT_PATH.fullmatch(name):
        return DatasetRef(name, "import", name)
    raise ValueError(f"Unknown data set {name!r}: expected {DATASET_HELP}.")


def check_dataset_name(name: str) -> str:
    dataset_ref(name)
    return name


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


