"""Model names of the registry, parsed without importing Keras or TensorFlow
(specifications are validated by processes that never train: the CLI, the dashboard)."""

from __future__ import annotations

import re

VGG_DEPTHS = (11, 13, 16, 19)

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
