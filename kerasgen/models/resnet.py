"""The CIFAR ResNet of He et al. (2016) as in bearpaw/pytorch-classification.

``resnet(depth=110)`` is the ResNet-110 of the paper: a 3x3 stem with 16 filters, three
stages of n = (depth - 2) / 6 basic blocks with 16/32/64 filters (stride 2 at the first
block of stages 2 and 3), a 1x1 conv + BN projection shortcut only where the shape
changes, global average pooling and a dense head.
"""

from __future__ import annotations

import keras

from kerasgen.models.common import (
    batch_norm,
    check_input_shape,
    check_num_classes,
    conv_initializer,
    torch_linear_initializers,
)
from kerasgen.naming import RESNET_STAGES

STAGE_FILTERS = RESNET_STAGES


def _conv3x3(x, filters: int, stride: int, name: str):
    if stride == 1:
        return keras.layers.Conv2D(
            filters, 3, padding="same", use_bias=False,
            kernel_initializer=conv_initializer(), name=name,
        )(x)
    # PyTorch pads one pixel on every side before a strided conv; Keras's "same" pads
    # asymmetrically (bottom/right only) for even sizes. Pad explicitly to match.
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(
        filters, 3, strides=stride, padding="valid", use_bias=False,
        kernel_initializer=conv_initializer(), name=name,
    )(x)


def basic_block(x, filters: int, stride: int, name: str):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU (bearpaw's BasicBlock)."""
    shortcut = x
    y = _conv3x3(x, filters, stride, f"{name}_conv1")
    y = batch_norm(f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv3x3(y, filters, 1, f"{name}_conv2")
    y = batch_norm(f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=stride, use_bias=False,
            kernel_initializer=conv_initializer(), name=f"{name}_shortcut_conv",
        )(x)
        shortcut = batch_norm(f"{name}_shortcut_bn")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet(depth: int = 110, num_classes: int = 10, input_shape=(32, 32, 3),
           name: str | None = None) -> keras.Model:
    """Build the CIFAR ResNet of the given depth (6n + 2: 8, 20, 32, 44, 56, 110, ...).

    ResNet-110 for CIFAR-10 has 1,730,714 trainable parameters, ResNet-20 272,474.

    Small inputs: a strided conv never takes the spatial size below 1 (a 1x1 map stays
    1x1), so 8x8 images and smaller work; the network simply stops downsampling.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(
            "ResNet depth must be 6n + 2 with n >= 1 (8, 20, 32, 44, 56, 110, ...). "
            f"Received: depth={depth!r}"
        )
    num_classes = check_num_classes(num_classes)
    input_shape = check_input_shape(input_shape)
    blocks = (depth - 2) // 6

    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(
        STAGE_FILTERS[0], 3, padding="same", use_bias=False,
        kernel_initializer=conv_initializer(), name="stem_conv",
    )(inputs)
    x = batch_norm("stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, filters in enumerate(STAGE_FILTERS, start=1):
        for block in range(1, blocks + 1):
            stride = 2 if (stage > 1 and block == 1) else 1
            x = basic_block(x, filters, stride, name=f"stage{stage}_block{block}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    kernel_init, bias_init = torch_linear_initializers(STAGE_FILTERS[-1])
    outputs = keras.layers.Dense(
        num_classes, kernel_initializer=kernel_init, bias_initializer=bias_init,
        name="classifier",
    )(x)
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}")
