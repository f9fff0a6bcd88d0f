"""The paper's networks as Keras 3 models, and a registry of them by name.

``build_model("resnet110", num_classes=10, input_shape=(32, 32, 3))`` — names are
``resnet<depth>`` for any depth 6n + 2 and ``vgg<depth>`` for 11/13/16/19 (with batch
norm, as in the paper's code; ``vgg<depth>_nobn`` without).
"""

from __future__ import annotations

import keras

from kerasgen.models.packed import copies_of, copy_name, packed
from kerasgen.models.resnet import resnet
from kerasgen.models.vgg import vgg
from kerasgen.naming import MODEL_NAME_HELP, check_model_name, model_width

__all__ = [
    "build_model", "check_model_name", "copies_of", "copy_name", "packed", "resnet",
    "vgg", "MODEL_NAME_HELP",
]

def build_model(name: str, num_classes: int = 10, input_shape=(32, 32, 3)) -> keras.Model:
    """Build a registered network by name (see ``MODEL_NAME_HELP``)."""
    family, depth, batch_norm = check_model_name(name)
    if family == "resnet":
        return resnet(depth, num_classes=num_classes, input_shape=input_shape, name=name)
    return vgg(depth, num_classes=num_classes, input_shape=input_shape,
               batch_norm=batch_norm, width=model_width(name), name=name)
