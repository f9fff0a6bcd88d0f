"""Packed networks: K independent copies of one network on a shared input.

The building block of packed training (one ``model.fit`` for the K cells of a pack that
share model, dataset, seed and batch size). With loss ``sum_k lr_k * loss_k`` and
``SGD(learning_rate=1.0)``, the gradient with respect to copy k is ``lr_k * grad loss_k``,
so every copy follows exactly its own plain-SGD trajectory.
"""

from __future__ import annotations

from typing import Callable

import keras


def copy_name(index: int) -> str:
    """Name of the k-th copy's output; Keras prefixes its per-output metrics with it
    (``copy_3_accuracy``, ``val_copy_3_loss``)."""
    return f"copy_{index}"


def packed(builder: Callable[[], keras.Model], copies: int,
           initial_weights: list | None = None, name: str = "packed") -> keras.Model:
    """K copies of ``builder()`` side by side, each with its own output.

    ``builder`` returns a fresh single network; the copies are built from it and all
    receive the same initial weights: ``initial_weights`` if given (a list as returned by
    ``Model.get_weights()``), else the weights of the first copy. The copies share no
    variables, so the gradient of one copy's loss never reaches another.
    """
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ValueError(f"copies must be a positive integer. Received: copies={copies!r}")
    nets = []
    for k in range(copies):
        net = builder()
        # Rename the sub-network so weight paths and summaries read "copy_3_net/...".
        net.name = f"{copy_name(k)}_net"  # type: ignore[misc]
        nets.append(net)
    weights = initial_weights if initial_weights is not None else nets[0].get_weights()
    for net in nets:
        net.set_weights(weights)
    inputs = keras.Input(shape=nets[0].input_shape[1:], name="image")
    outputs = [
        keras.layers.Identity(name=copy_name(k))(net(inputs)) for k, net in enumerate(nets)
    ]
    return keras.Model(inputs, outputs, name=name)


def copies_of(model: keras.Model) -> list[keras.Model]:
    """The sub-networks of a packed model, in output order."""
    return [model.get_layer(f"{copy_name(k)}_net") for k in range(len(model.outputs))]
