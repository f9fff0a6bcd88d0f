"""The paper's networks as Keras 3 models, and the networks you bring.

``build_model("resnet110", num_classes=10, input_shape=(32, 32, 3))`` — names are
``resnet<depth>`` for any depth 6n + 2 and ``vgg<depth>`` for 11/13/16/19 (with batch
norm, as in the paper's code; ``vgg<depth>_nobn`` without). Your own network is a function
``build(input_shape, num_classes, **model_args)`` returning an uncompiled ``keras.Model``
whose output is one logit per class, named in a spec by its import path
(``"package.module:function"``) or by a name given to ``kerasgen.register_model`` (or a
``kerasgen.models`` entry point of an installed package). It is checked when built: a
model, the right output, logits (no softmax); ``fingerprint`` says what was built, so a
study refuses to resume with a changed network.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json

import keras

from kerasgen.models.packed import copies_of, copy_name, packed
from kerasgen.models.resnet import resnet
from kerasgen.models.vgg import vgg
from kerasgen.naming import (
    MODEL_NAME_HELP,
    ModelError,
    ModelRef,
    check_model_name,
    model_ref,
    model_width,
    register_model,
    registered_builder,
)

__all__ = [
    "MODEL_NAME_HELP", "ModelError", "build_model", "builder_of", "check_model_name",
    "copies_of", "copy_name", "fingerprint", "module_hash", "packed", "register_model",
    "resnet", "vgg",
]


def _import_target(ref: ModelRef):
    module_name, _, qualname = str(ref.target).partition(":")
    try:
        obj = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the entry's fault
        raise ModelError(f"model {ref.name!r}: {module_name!r} does not import "
                         f"({type(exc).__name__}: {exc}). Is the package installed, or its "
                         "directory on PYTHONPATH for every worker?") from None
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"model {ref.name!r}: {module_name!r} has no {qualname!r}.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelError(f"model {ref.name!r}: {ref.target!r} is not a function.")
    return obj


def builder_of(ref: ModelRef):
    """The function that builds ``ref``'s network: ``(input_shape, num_classes, **args)``."""
    if ref.kind == "resnet":
        return lambda input_shape, num_classes: resnet(
            ref.depth, num_classes=num_classes, input_shape=input_shape, name=ref.name)
    if ref.kind == "vgg":
        return lambda input_shape, num_classes: vgg(
            ref.depth, num_classes=num_classes, input_shape=input_shape,
            batch_norm=ref.batch_norm, width=model_width(ref.name), name=ref.name)
    fn = registered_builder(ref.name) if ref.kind == "registered" else None
    if fn is not None:
        return fn
    if ref.target is None:
        raise ModelError(f"model {ref.name!r} was registered in another process from a "
                         "function this process cannot import (defined in a script's "
                         "__main__ or inside a function): define it at module level in an "
                         "importable module.")
    return _import_target(ref)


def build_model(name, num_classes: int = 10, input_shape=(32, 32, 3),
                targets: dict | None = None) -> keras.Model:
    """Build a network by name or ``ModelRef`` (see the module docstring); a network of
    your own is checked (``ModelError`` naming what is wrong)."""
    ref = name if isinstance(name, ModelRef) else model_ref(name, targets)
    input_shape = tuple(int(s) for s in input_shape)
    fn = builder_of(ref)
    if ref.builtin:
        return fn(input_shape, int(num_classes))
    try:
        net = fn(input_shape, int(num_classes), **dict(ref.args))
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's function failed: say which
        raise ModelError(f"model {ref.name!r} raised {type(exc).__name__} when built with "
                         f"input_shape={input_shape}, num_classes={num_classes}"
                         f"{', ' + str(dict(ref.args)) if ref.args else ''}: {exc}") from exc
    check_network(ref.name, net, input_shape, int(num_classes))
    return net


def check_network(name: str, net, input_shape: tuple, num_classes: int) -> None:
    """A network of your own is a ``keras.Model`` taking ``input_shape`` to one logit per
    class; else ModelError naming the entry and what it returned."""
    if not isinstance(net, keras.Model):
        raise ModelError(f"model {name!r} returned {type(net).__name__}, not a keras.Model: "
                         "the function must return an (uncompiled) keras.Model.")
    import numpy as np

    try:
        out = net(np.zeros((1, *input_shape), dtype=keras.config.floatx()), training=False)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"model {name!r} cannot take inputs of shape {input_shape} (the data "
                         f"set's): {type(exc).__name__}: {exc}") from None
    shape = tuple(getattr(out, "shape", ()))
    if isinstance(out, (list, tuple, dict)) or shape != (1, num_classes):
        raise ModelError(f"model {name!r} outputs shape {shape or type(out).__name__} for one "
                         f"image; it must output one logit per class: (batch, {num_classes}).")
    last = net.layers[-1] if getattr(net, "layers", None) else None
    activation = getattr(last, "activation", None)
    if activation is not None and getattr(activation, "__name__", "") == "softmax":
        raise ModelError(f"model {name!r} ends in a softmax: return logits (no activation on "
                         "the last layer); kerasgen's loss applies the softmax itself.")


def fingerprint(net: keras.Model) -> dict:
    """What was built, to recognise the same network later: each layer's class and its
    weights' shapes, the parameter count, and a hash of them."""
    layers = [[type(layer).__name__, [list(map(int, w.shape)) for w in layer.weights]]
              for layer in net._flatten_layers(include_self=False, recursive=True)
              if not layer._flatten_layers(include_self=False, recursive=False)]
    params = int(sum(int(np_prod(w.shape)) for w in net.weights))
    text = json.dumps({"layers": layers, "params": params}, sort_keys=True)
    return {"params": params, "layers": len(layers),
            "network_hash": hashlib.sha256(text.encode()).hexdigest()[:16]}


def np_prod(shape) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


def module_hash(ref: ModelRef) -> str | None:
    """A hash of the source file that defines a network of your own (None: a built-in,
    or no file)."""
    if ref.builtin:
        return None
    try:
        fn = builder_of(ref)
        path = inspect.getsourcefile(fn)
    except (ModelError, TypeError):
        return None
    if not path:
        return None
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()[:16]
