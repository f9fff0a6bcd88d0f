"""Fused packing: K copies of a network as ONE network of K-times-wider grouped layers.

The branch layout (``packed``) runs K sub-networks side by side: K small convolutions per
layer. The fused layout runs one grouped convolution per layer (``groups=K``): copy k owns
channels ``[k*C, (k+1)*C)`` of every feature map, a grouped convolution never mixes
groups, batch norm and ReLU act per channel, and the classifier is a batched matmul
(``einsum``) — so the copies stay exactly independent while each layer is one big kernel
that fills an accelerator better. The stem sees the shared image, so it is an ordinary
convolution whose K x 16 output channels are the K copies' stems side by side.

Outputs are named ``copy_0`` ... ``copy_{K-1}`` like the branch layout, so losses,
metrics and the store see no difference. ``fused_weights`` / ``unfuse_weights`` convert
between the K copies' weights (as ``Model.get_weights()`` of the single network) and the
fused network's.
"""

from __future__ import annotations

import keras

from kerasgen.models.common import (
    BN_EPSILON,
    BN_MOMENTUM,
    check_input_shape,
    check_num_classes,
    conv_initializer,
)
from kerasgen.models.packed import copy_name
from kerasgen.models.resnet import STAGE_FILTERS
from kerasgen.models.vgg import CONFIGS
from kerasgen.naming import check_model_name, model_width


@keras.saving.register_keras_serializable(package="kerasgen")
class GroupedDense(keras.layers.Layer):
    """K independent dense layers on a (batch, K, features) input -> (batch, K, units)."""

    def __init__(self, units: int, groups: int, kernel_stddev: float | None = None, **kwargs):
        super().__init__(**kwargs)
        self.units, self.groups, self.kernel_stddev = units, groups, kernel_stddev

    def build(self, input_shape):
        features = input_shape[-1]
        if self.kernel_stddev is None:  # PyTorch's nn.Linear default (see common.py)
            bound = 1.0 / features ** 0.5
            kernel_init = keras.initializers.RandomUniform(-bound, bound)
            bias_init = keras.initializers.RandomUniform(-bound, bound)
        else:
            kernel_init = keras.initializers.RandomNormal(0.0, self.kernel_stddev)
            bias_init = "zeros"
        self.kernel = self.add_weight(shape=(self.groups, features, self.units),
                                      initializer=kernel_init, name="kernel")
        self.bias = self.add_weight(shape=(self.groups, self.units), initializer=bias_init,
                                    name="bias")

    def call(self, inputs):
        return keras.ops.einsum("bki,kiu->bku", inputs, self.kernel) + self.bias

    def get_config(self):
        return {**super().get_config(), "units": self.units, "groups": self.groups,
                "kernel_stddev": self.kernel_stddev}


def _bn(name):
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def _conv(x, filters, kernel, stride, groups, use_bias, name):
    if stride != 1 and kernel == 3:
        x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same" if kernel == 3 else "valid"
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, groups=groups,
                               use_bias=use_bias, kernel_initializer=conv_initializer(),
                               name=name)(x)


def _split_outputs(logits, copies):
    """(batch, K, classes) -> K named outputs."""
    return [keras.layers.Identity(name=copy_name(k))(logits[:, k, :]) for k in range(copies)]


def fused_resnet(depth: int, copies: int, num_classes: int = 10, input_shape=(32, 32, 3),
                 name: str | None = None) -> keras.Model:
    blocks = (depth - 2) // 6
    k = copies
    inputs = keras.Input(shape=check_input_shape(input_shape), name="image")
    # The stem reads the shared image: an ordinary conv with the K stems side by side.
    x = _conv(inputs, STAGE_FILTERS[0] * k, 3, 1, 1, False, "stem_conv")
    x = _bn("stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    channels = STAGE_FILTERS[0]
    for stage, filters in enumerate(STAGE_FILTERS, start=1):
        for block in range(1, blocks + 1):
            stride = 2 if (stage > 1 and block == 1) else 1
            prefix = f"stage{stage}_block{block}"
            y = _conv(x, filters * k, 3, stride, k, False, f"{prefix}_conv1")
            y = _bn(f"{prefix}_bn1")(y)
            y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
            y = _conv(y, filters * k, 3, 1, k, False, f"{prefix}_conv2")
            y = _bn(f"{prefix}_bn2")(y)
            shortcut = x
            if stride != 1 or channels != filters:
                shortcut = _conv(x, filters * k, 1, stride, k, False, f"{prefix}_shortcut_conv")
                shortcut = _bn(f"{prefix}_shortcut_bn")(shortcut)
            x = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
            x = keras.layers.ReLU(name=f"{prefix}_out")(x)
            channels = filters
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Reshape((k, STAGE_FILTERS[-1]), name="split_copies")(x)
    logits = GroupedDense(check_num_classes(num_classes), k, name="classifier")(x)
    return keras.Model(inputs, _split_outputs(logits, k), name=name or f"fused_resnet{depth}")


def fused_vgg(depth: int, copies: int, num_classes: int = 10, input_shape=(32, 32, 3),
              batch_norm: bool = True, width: int = 64, name: str | None = None) -> keras.Model:
    k = copies
    inputs = keras.Input(shape=check_input_shape(input_shape), name="image")
    x = inputs
    stage, conv, first = 1, 0, True
    for item in CONFIGS[depth]:
        if item == "M":
            if x.shape[1] >= 2 and x.shape[2] >= 2:
                x = keras.layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
            stage, conv = stage + 1, 0
            continue
        conv += 1
        prefix = f"stage{stage}_conv{conv}"
        x = keras.layers.Conv2D(item * width // 64 * k, 3, padding="same",
                                groups=1 if first else k, use_bias=True,
                                kernel_initializer=conv_initializer(), bias_initializer="zeros",
                                name=prefix)(x)
        first = False
        if batch_norm:
            x = _bn(f"{prefix}_bn")(x)
        x = keras.layers.ReLU(name=f"{prefix}_relu")(x)
    h, w, c = x.shape[1], x.shape[2], x.shape[3] // k
    # Each copy flattens its own (h, w, c) map, in that order, as the single network does.
    x = keras.layers.Reshape((h, w, k, c), name="split_channels")(x)
    x = keras.layers.Permute((3, 1, 2, 4), name="copies_first")(x)
    x = keras.layers.Reshape((k, h * w * c), name="flatten")(x)
    logits = GroupedDense(check_num_classes(num_classes), k, kernel_stddev=0.01,
                          name="classifier")(x)
    return keras.Model(inputs, _split_outputs(logits, k), name=name or f"fused_vgg{depth}")


def fused(model: str, copies: int, num_classes: int = 10, input_shape=(32, 32, 3),
          initial_weights: list | None = None) -> keras.Model:
    """The fused K-copy network of a registry name, all copies from ``initial_weights``
    (the single network's ``get_weights()``) when given."""
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ValueError(f"copies must be a positive integer. Received: copies={copies!r}")
    family, depth, batch_norm = check_model_name(model)
    if family == "resnet":
        net = fused_resnet(depth, copies, num_classes, input_shape, name=f"fused_{model}")
    else:
        net = fused_vgg(depth, copies, num_classes, input_shape, batch_norm,
                        model_width(model), name=f"fused_{model}")
    if initial_weights is not None:
        net.set_weights(fused_weights([initial_weights] * copies, net))
    return net


def _concat(arrays, axis):
    import numpy as np

    return np.concatenate(arrays, axis=axis)


def fused_weights(copy_weights: list[list], net: keras.Model) -> list:
    """K copies' weight lists (single-network order) -> the fused network's weights.

    Layers of the single network and the fused one correspond one to one, in the same
    order; every per-channel array is concatenated along its last axis, the classifier's
    kernel and bias stacked on a new first axis.
    """
    import numpy as np

    fused_shapes = [tuple(w.shape) for w in net.weights]
    out = []
    for i, shape in enumerate(fused_shapes):
        parts = [np.asarray(w[i]) for w in copy_weights]
        if len(shape) == len(parts[0].shape) + 1:  # classifier: (K, in, units) / (K, units)
            out.append(np.stack(parts, axis=0))
        else:
            out.append(_concat(parts, axis=-1))
        if tuple(out[-1].shape) != shape:
            raise ValueError(f"weight {i} ({net.weights[i].path}) has shape {shape} in the "
                             f"fused network but {out[-1].shape} from the copies")
    return out


def unfuse_weights(net: keras.Model, copies: int) -> list[list]:
    """The fused network's weights -> K weight lists in single-network order."""
    import numpy as np

    result: list[list] = [[] for _ in range(copies)]
    for w in net.get_weights():
        w = np.asarray(w)
        if w.shape and w.shape[0] == copies and w.ndim in (2, 3) and _is_grouped_dense(w, net):
            for k in range(copies):
                result[k].append(w[k])
        else:
            for k, part in enumerate(np.split(w, copies, axis=-1)):
                result[k].append(part)
    return result


def _is_grouped_dense(array, net) -> bool:
    layer = net.get_layer("classifier")
    return any(tuple(array.shape) == tuple(v.shape) for v in layer.weights)


__all__ = ["GroupedDense", "fused", "fused_resnet", "fused_vgg", "fused_weights",
           "unfuse_weights"]
