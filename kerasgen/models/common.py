"""Initializers and layer settings shared by the CIFAR networks.

They reproduce the PyTorch defaults of bearpaw/pytorch-classification, the code the
paper used, so that a Keras network starts from the same distribution of weights.
"""

from __future__ import annotations

import math

import keras

from kerasgen.naming import BN_EPSILON, BN_MOMENTUM

__all__ = ["BN_EPSILON", "BN_MOMENTUM", "batch_norm", "check_input_shape",
           "check_num_classes", "conv_initializer", "torch_linear_initializers"]


def conv_initializer() -> keras.initializers.Initializer:
    """He-normal with fan-out: N(0, sqrt(2 / (k*k*out_channels))), as bearpaw's
    ``m.weight.data.normal_(0, math.sqrt(2. / n))`` with ``n = k*k*out_channels``."""
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


def torch_linear_initializers(fan_in: int):
    """PyTorch's default ``nn.Linear`` initialization: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    for both the kernel (kaiming_uniform with a=sqrt(5)) and the bias."""
    bound = 1.0 / math.sqrt(fan_in)
    kernel = keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
    )
    bias = keras.initializers.RandomUniform(-bound, bound)
    return kernel, bias


def batch_norm(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name
    )


def check_input_shape(input_shape) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or any((not isinstance(s, int)) or s < 1 for s in shape):
        raise ValueError(
            "input_shape must be (height, width, channels) with positive integers. "
            f"Received: input_shape={input_shape!r}"
        )
    return shape  # type: ignore[return-value]


def check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"num_classes must be an integer >= 2. Received: num_classes={num_classes!r}"
        )
    return num_classes
