"""VGG for CIFAR as in bearpaw/pytorch-classification (``models/cifar/vgg.py``).

3x3 convolutions with bias (+ batch norm when ``batch_norm=True``) + ReLU, 2x2 max
pooling between stages, and a single dense layer 512 -> classes. VGG-19-BN for CIFAR-10
has 20,040,522 trainable parameters (BN moving statistics not counted).
"""

from __future__ import annotations

import keras

from kerasgen.models.common import (
    batch_norm as bn_layer,
)
from kerasgen.models.common import (
    check_input_shape,
    check_num_classes,
    conv_initializer,
)
from kerasgen.naming import VGG_CONFIGS

CONFIGS = VGG_CONFIGS


def vgg(depth: int = 19, num_classes: int = 10, input_shape=(32, 32, 3),
        batch_norm: bool = True, width: int = 64, name: str | None = None) -> keras.Model:
    """Build VGG-11/13/16/19 for small images.

    Small inputs: a 2x2 max pool is skipped where the map is already 1 pixel high or
    wide (it would take the size below 1), so 8x8 images work: 8 -> 4 -> 2 -> 1 and the
    last two pools are skipped. On 32x32 inputs all five pools apply and the classifier
    sees 512 features, exactly as in the paper's code.

    ``width`` scales every stage's filters (64/128/256/512/512 at the default 64, the
    paper's network); a narrow member of the family (``width=16``) trains on a CPU in
    minutes, for demos and tests.
    """
    # The type check rejects 19.0 and True (which would otherwise match the keys 19 and 1).
    if isinstance(depth, bool) or not isinstance(depth, int) or depth not in CONFIGS:
        raise ValueError(
            f"VGG depth must be one of {sorted(CONFIGS)}. Received: depth={depth!r}"
        )
    if not isinstance(batch_norm, bool):
        raise ValueError(f"batch_norm must be True or False. Received: batch_norm={batch_norm!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer. Received: width={width!r}")
    num_classes = check_num_classes(num_classes)
    input_shape = check_input_shape(input_shape)
    use_bn = batch_norm

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    stage, conv = 1, 0
    for item in CONFIGS[depth]:
        if item == "M":
            if x.shape[1] >= 2 and x.shape[2] >= 2:
                x = keras.layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
            stage, conv = stage + 1, 0
            continue
        conv += 1
        prefix = f"stage{stage}_conv{conv}"
        x = keras.layers.Conv2D(
            item * width // 64, 3, padding="same", use_bias=True,
            kernel_initializer=conv_initializer(),
            bias_initializer="zeros", name=prefix,
        )(x)
        if use_bn:
            x = bn_layer(f"{prefix}_bn")(x)
        x = keras.layers.ReLU(name=f"{prefix}_relu")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01),
        bias_initializer="zeros",
        name="classifier",
    )(x)
    suffix = ("_bn" if use_bn else "") + (f"_w{width}" if width != 64 else "")
    return keras.Model(inputs, outputs, name=name or f"vgg{depth}{suffix}")

