"""Packed training, the method in one place: K cells that share a group and a batch size
train in one ``model.fit`` as K copies of the network on the same batches.

The maths. Cell k of a pack is plain SGD with its own learning rate ``lr_k`` on the same
batches as its pack-mates, from the group's initial weights ``w_0``::

    w_k(t+1) = w_k(t) - lr_k * grad L_B(t)(w_k(t))          (momentum 0, no decay)

The packed model computes the K copies' outputs side by side and its loss is the
unweighted sum ``L = sum_k L_k(w_k)``. The copies share no variable, so
``dL/dw_k = grad L_k(w_k)``: each copy's gradient is its own, untouched by the others.
``PackedSGD`` then applies to each variable the learning rate of the copy that owns it,
``w -= lr_k * g``: the same operation on the same numbers as ``SGD(learning_rate=lr_k)``
on copy k alone, so a pack equals K separate runs bit for bit in float32, for any
learning rates. (The textbook formulation, ``L = sum_k lr_k * L_k`` with ``SGD(1.0)``,
gives the same update in exact arithmetic but rounds differently unless every rate is a
power of two.) Momentum carries over per variable unchanged; weight decay is coupled, as
PyTorch's SGD: ``g += wd * w`` before ``lr_k`` applies.

Two layouts compute the same function: ``branches`` (K sub-networks in one graph,
``kerasgen.models.packed``) and ``fused`` (one network of grouped convolutions and
batched matmuls, ``kerasgen.models.fused``); ``cell_weights`` reads every copy's weights
back in the single network's order either way.

Because the learning rates are optimizer state (``PackedSGD.copy_learning_rates``), a
compiled pack is reused for the next pack of the same shape (``PACKS``): its weights are
reset to the next group's, its optimizer state to zero and its rates to the next pack's
(``reset_pack``), instead of building and compiling a new model (TensorFlow/Keras keep
~40 MB for every model built in a process).
"""

from __future__ import annotations

import contextlib
import gc

import keras
import numpy as np

from kerasgen.models import build_model, copies_of, copy_name, packed
from kerasgen.models.fused import fused, fused_weights, unfuse_weights
from kerasgen.naming import ModelRef, file_stem, model_ref
from kerasgen.vocabulary import EXAMPLE_LOSS


@contextlib.contextmanager
def float_type(dtype: str):
    """Keras's float type and dtype policy set to ``dtype`` inside the block (restored
    after): every variable, computation and optimizer slot created there uses it. Under
    JAX, float64 also needs ``jax_enable_x64`` (process-wide, switched on once)."""
    old_floatx, old_policy = keras.config.floatx(), keras.config.dtype_policy()
    if dtype == "float64" and keras.backend.backend() == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    # mixed_bfloat16: Keras's mixed policy; variables (and so the optimizer's update) stay
    # in the float type, float32; layers compute in bfloat16.
    keras.config.set_floatx("float32" if dtype == "mixed_bfloat16" else dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(old_floatx)
        keras.config.set_dtype_policy(old_policy)


class PackedSGD(keras.optimizers.SGD):
    """Plain SGD for K independent copies, each with its own learning rate.

    The copies' losses are summed unweighted, so the gradient of copy k's variables is
    its own ``grad loss_k``; this optimizer then applies ``w -= lr_k * g`` (Keras's SGD
    update, momentum included) with ``lr_k`` the learning rate of the copy that owns
    the variable. That is the update of ``SGD(learning_rate=lr_k)`` on copy k alone,
    the same operation on the same numbers, so a pack matches separate runs bit for bit
    for any learning rates. (The textbook formulation, loss ``sum_k lr_k * loss_k`` with
    ``SGD(1.0)``, computes the same update but rounds differently except for
    power-of-two rates.) The learning rates are optimizer state (``copy_learning_rates``),
    so one compiled pack is reused for the next pack of the same shape: Keras/TensorFlow
    leak ~40 MB for every model built and compiled in a process.

    Weight decay (off by default) is coupled, as PyTorch's: ``g += weight_decay * w``
    before the copy's learning rate applies (Keras's own ``weight_decay`` is decoupled).

    ``copy_of_variable`` maps ``id(variable)`` to the copy that owns it: an int, or for
    the fused layout an integer array broadcastable to the variable (copy index per
    slice).
    """

    def __init__(self, learning_rates: list[float], copy_of_variable: dict,
                 momentum: float = 0.0, weight_decay: float = 0.0, **kwargs):
        super().__init__(learning_rate=1.0, momentum=momentum, **kwargs)
        self.initial_learning_rates = [float(lr) for lr in learning_rates]
        self.copy_of_variable = dict(copy_of_variable)
        self.coupled_weight_decay = float(weight_decay)
        self._copy_by_index: list = []

    def build(self, variables):
        super().build(variables)
        missing = [v.path for v in variables if id(v) not in self.copy_of_variable]
        if missing:
            raise RuntimeError(f"variables of no copy in a packed model: {missing[:3]}")
        self._copy_by_index = [self.copy_of_variable[id(v)] for v in variables]
        # An initializer, not an assign: Keras may build the optimizer symbolically,
        # where assignments are not applied.
        rates = list(self.initial_learning_rates)
        self.copy_learning_rates = self.add_variable(
            shape=(len(rates),),
            initializer=lambda shape, dtype=None: keras.ops.convert_to_tensor(rates, dtype=dtype),
            dtype=variables[0].dtype if variables else None, name="copy_learning_rates")

    def set_learning_rates(self, learning_rates: list[float]) -> None:
        self.copy_learning_rates.assign(
            np.asarray(learning_rates, dtype=self.copy_learning_rates.dtype))

    def update_step(self, gradient, variable, learning_rate):
        owner = self._copy_by_index[self._get_variable_index(variable)]
        rate = keras.ops.cast(keras.ops.take(self.copy_learning_rates, owner), variable.dtype)
        if self.coupled_weight_decay:
            gradient = keras.ops.add(gradient, keras.ops.multiply(
                variable, keras.ops.cast(self.coupled_weight_decay, variable.dtype)))
        super().update_step(gradient, variable, rate)


LAYOUTS = ("branches", "fused")


def _copy_owners(net: keras.Model, layout: str, k: int) -> dict:
    """id(variable) -> the copy that owns it (an int, or per-slice indices when fused)."""
    if layout == "branches":
        return {id(v): i for i, net_i in enumerate(copies_of(net))
                for v in net_i.trainable_variables}
    owners = {}
    classifier = {id(v) for v in net.get_layer("classifier").trainable_variables}
    for v in net.trainable_variables:
        if id(v) in classifier:  # (K, ...) arrays: copy i is index i
            owners[id(v)] = np.arange(k).reshape((k,) + (1,) * (len(v.shape) - 1))
        else:  # channels: copy i owns the i-th block of the last axis
            owners[id(v)] = np.repeat(np.arange(k), v.shape[-1] // k)
    return owners


def build_pack(model: str, ds, learning_rates: list[float],
               weights: list, momentum: float = 0.0, weight_decay: float = 0.0,
               jit_compile: bool = False, steps_per_execution: int = 1,
               synchronized_bn: bool = False, layout: str = "branches") -> keras.Model:
    """A compiled packed model: one copy per learning rate, all from ``weights``.

    ``layout``: "branches" (K sub-networks in one graph) or "fused" (one network of
    grouped layers, see ``kerasgen.models.fused``); both train every copy exactly as
    plain SGD would. ``synchronized_bn``: batch statistics all-reduced across replicas
    (for a MirroredStrategy), so they are those of the global batch, as on one device.
    """
    k = len(learning_rates)
    ref = model if isinstance(model, ModelRef) else model_ref(model)
    if layout == "fused":
        if not ref.builtin:
            raise ValueError(f"the fused layout knows only the built-in networks, not "
                             f"{ref.name!r}; use layout branches (auto chooses it)")
        net = fused(ref.name, k, ds.num_classes, ds.input_shape, initial_weights=weights)
    elif layout == "branches":
        net = packed(lambda: build_model(ref, ds.num_classes, ds.input_shape), k,
                     initial_weights=weights, name=f"pack_{file_stem(ref.name, 40)}")
    else:
        raise ValueError(f"layout must be one of {LAYOUTS}. Received: layout={layout!r}")
    if synchronized_bn:
        for layer in net._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True  # read at call time by BatchNormalization._moments
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = PackedSGD(learning_rates, _copy_owners(net, layout, k),
                          momentum=float(momentum), weight_decay=float(weight_decay))
    net.compile(
        optimizer=optimizer,
        loss={copy_name(i): loss for i in range(k)},
        metrics={copy_name(i): ["accuracy", example_loss()] for i in range(k)},
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    net.pack_layout = layout  # read by reset_pack / cell_weights callers
    return net


def example_loss() -> keras.metrics.Metric:
    """Each copy's cross-entropy averaged over the examples it saw, the loss recorded
    per cell (``callbacks.EXAMPLE_LOSS``). Keras's own per-output loss is a mean over
    batches whenever TensorFlow does not know the batch size (a last partial batch), so
    a pack of several copies and a pack of one would record different training losses
    for the same weights."""
    return keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name=EXAMPLE_LOSS)


def reset_pack(net: keras.Model, weights: list, learning_rates: list[float]) -> None:
    """Make a compiled pack start over: every copy at ``weights``, optimizer state
    (iterations, momentum) zero, the given learning rates. Equivalent to a new
    ``build_pack`` without building or compiling anything."""
    k = len(learning_rates)
    if net.pack_layout == "fused":
        net.set_weights(fused_weights([weights] * k, net))
    else:
        for net_i in copies_of(net):
            net_i.set_weights(weights)
    optimizer = net.optimizer
    if optimizer.built:
        optimizer.iterations.assign(0)
        for momentum in getattr(optimizer, "momentums", None) or []:
            momentum.assign(np.zeros(momentum.shape, dtype=momentum.dtype))
        optimizer.set_learning_rates(learning_rates)
    else:
        optimizer.initial_learning_rates = [float(lr) for lr in learning_rates]


class PackCache:
    """One compiled pack kept for the next pack of the same shape (model, data, K,
    layout, compile options): reset instead of rebuilt (see ``PackedSGD``)."""

    def __init__(self):
        self.key = None
        self.net = None

    def get(self, key, build, weights, learning_rates) -> keras.Model:
        if self.key == key and self.net is not None:
            reset_pack(self.net, weights, learning_rates)
            return self.net
        self.clear()
        self.net, self.key = build(), key
        return self.net

    def clear(self) -> None:
        if self.net is not None:
            self.net, self.key = None, None
            keras.backend.clear_session(free_memory=True)
            gc.collect()


PACKS = PackCache()


def set_cell_weights(net: keras.Model, layout: str, weights: list[list]) -> None:
    """Put each copy at its own weights (single-network order, as ``cell_weights`` gives
    them): a pack that continues finished cells from their final weights."""
    if layout == "fused":
        net.set_weights(fused_weights(weights, net))
    else:
        for net_i, w in zip(copies_of(net), weights):
            net_i.set_weights(w)


def cell_weights(net: keras.Model, layout: str) -> list[list]:
    """Each copy's weights in the single network's order, whatever the layout."""
    if layout == "fused":
        return unfuse_weights(net, len(net.outputs))
    return [c.get_weights() for c in copies_of(net)]


def resolve_layout(option: str, model=None) -> str:
    """``"auto"``: what scripts/bench_train.py measured fastest on this kind of device,
    for a built-in network; always "branches" for a network of your own (``model``, a
    ModelRef), whose layers the fused layout does not know."""
    if option in LAYOUTS:
        return option
    if option != "auto":
        raise ValueError(f"layout must be auto, branches or fused. Received: {option!r}")
    if model is not None and not model.builtin:
        return "branches"
    return "fused" if _has_accelerator() else "branches"


def _has_accelerator() -> bool:
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if keras.backend.backend() == "jax":
        import jax

        return jax.default_backend() != "cpu"
    return False


def mirrored_strategy():
    """One cell on all local devices: every GPU, or (for tests) every logical CPU."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy()
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(cpus) < 2:
        raise RuntimeError("--mirrored needs at least two devices (GPUs); this machine has "
                           f"{len(cpus)} CPU device and no GPU.")
    return tf.distribute.MirroredStrategy(devices=cpus)


def resolve_jit_compile(option: bool | str, exact: bool = False) -> bool:
    """Whether the runner's packs are compiled with XLA: the value in effect, recorded.

    Under TensorFlow it is always False: the runner turns TensorFlow's op determinism on
    (``train.configure_determinism``: a resumed or repeated cell gives the same numbers),
    and Keras then compiles without XLA whatever ``jit_compile`` asks
    (``keras.src.trainers.trainer.model_supports_jit``); ``xla_refused`` tells the caller
    to say so. Under JAX ``"auto"`` is on, on every device (without it Keras's JAX trainer
    dispatches every op from Python; with it JAX's XLA fuses the step: the fast path), unless
    ``exact``: XLA rounds a pack's fused computation differently from its cells run alone
    (tests/test_backends.py measures how much), and ``exact`` keeps packs equal to their
    cells bit for bit. A resumed run equals an uninterrupted one either way (one program,
    one device: JAX is deterministic).
    """
    if not isinstance(option, bool) and option != "auto":
        raise ValueError(f"jit_compile must be true, false or 'auto'. Received: {option!r}")
    if keras.backend.backend() == "tensorflow":
        return False
    if option == "auto":
        return not exact
    return option


def xla_refused(option: bool | str) -> bool:
    """True when XLA was asked for and the backend's determinism rules it out."""
    return option is True and not resolve_jit_compile(option)


def measure_pack_rate(arguments: str) -> None:
    """In a measuring process (``kerasgen.backends.measure``; KERAS_BACKEND set): build a
    pack of the given shape, warm up, time training steps; print the rate as JSON."""
    import json
    import time

    started = time.perf_counter()
    args = json.loads(arguments)
    shape, budget = args["shape"], float(args["seconds"])

    class Shape:  # what build_pack reads of a data set
        input_shape = tuple(args["input_shape"])
        num_classes = int(args["num_classes"])
        name = shape["dataset"]

    k, batch = int(shape["copies"]), int(shape["batch_size"])
    keras.utils.set_random_seed(0)
    with float_type(shape.get("dtype", "float32")):
        weights = build_model(shape["model"], Shape.num_classes, Shape.input_shape).get_weights()
        net = build_pack(shape["model"], Shape, [0.01] * k, weights,
                         jit_compile=resolve_jit_compile("auto"),
                         layout=resolve_layout("auto"))
        rng = np.random.default_rng(0)
        x = rng.random((batch, *Shape.input_shape)).astype(keras.config.floatx())
        y = rng.integers(0, Shape.num_classes, batch)
        xs, ys = [x] * k, {f"copy_{i}": y for i in range(k)}
        compiling = time.perf_counter()
        net.train_on_batch(xs, ys)  # compile
        net.train_on_batch(xs, ys)
        compile_seconds = time.perf_counter() - compiling
        steps, timed = 0, time.perf_counter()
        while steps < 3 or (time.perf_counter() - started < budget and steps < 200):
            net.train_on_batch(xs, ys)
            steps += 1
        elapsed = time.perf_counter() - timed
    print(json.dumps({"rate": steps * batch * k / elapsed, "steps": steps,
                      "compile": compile_seconds}))


__all__ = ["LAYOUTS", "PACKS", "PackCache", "PackedSGD", "build_pack", "cell_weights",
           "measure_pack_rate",
           "set_cell_weights",
           "float_type", "mirrored_strategy", "reset_pack", "resolve_jit_compile",
           "resolve_layout", "xla_refused"]
