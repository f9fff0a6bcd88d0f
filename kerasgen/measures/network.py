"""The measures of one Keras network at its current weights, on a set of examples: the
TensorFlow side of ``kerasgen measures`` (the methods are in
:mod:`kerasgen.measures.numeric`, the bookkeeping in :mod:`kerasgen.measures.runs`).

What every data measure is taken on: the mean sparse softmax cross-entropy of the logits
(the runner's loss) over the examples given (the run's clean training subset: normalized,
never augmented), with batch normalization in inference mode (its moving statistics,
as the clean training metrics and the test set are measured). Weights are perturbed
through ``model.stateless_call``, so the model's own variables never change.

Norms read the conv and dense kernels with the batch normalization that follows a
kernel folded into it: in inference mode a BN layer after a convolution multiplies each
output channel by ``s = gamma / sqrt(moving_variance + epsilon)``, so the linear map the
network applies is ``W * s`` (biases and shifts are not part of any norm). A BN layer
that does not follow a kernel counts as its own diagonal map ``diag(s)``. Without the
fold, a kernel followed by BN has a norm that training can change freely (BN undoes any
rescaling), which is why Jiang et al. remove such degrees of freedom.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from kerasgen.measures import numeric
from kerasgen.measures.catalogue import MeasureError


@dataclass
class LinearMap:
    """One linear layer as the network applies it in inference mode."""

    name: str
    kind: str                    # "conv" | "dense" | "bn"
    kernel: np.ndarray           # conv: (kh, kw, c_in, c_out); dense: (n_in, n_out); bn: (c,)
    input_shape: tuple | None    # conv: (h, w, c_in) of the layer's input
    strides: tuple = (1, 1)
    padding: str = "valid"
    folded: str | None = None    # the BN layer folded in

    def matrix(self) -> np.ndarray:
        """The reshaped kernel: (kh * kw * c_in) x c_out for a convolution."""
        if self.kind == "bn":
            return np.diag(self.kernel)
        return self.kernel.reshape(-1, self.kernel.shape[-1])


def _parents(layer) -> list:
    return [p.operation for node in getattr(layer, "_inbound_nodes", [])
            for p in node.parent_nodes]


def _bn_scale(bn) -> np.ndarray:
    weights = {v.path.rsplit("/", 1)[-1]: np.asarray(v.numpy(), float) for v in bn.weights}
    var = weights.get("moving_variance")
    if var is None:
        raise MeasureError(f"batch normalization layer {bn.name!r} has no moving variance")
    gamma = weights.get("gamma", np.ones_like(var))
    return gamma / np.sqrt(var + float(bn.epsilon))


def linear_maps(model, fold_bn: bool = True) -> list[LinearMap]:
    """The network's conv and dense kernels (float64), each with the BN layer that
    consumes it folded in when ``fold_bn`` (see the module docstring)."""
    import keras

    layers = list(model.layers)
    consumers: dict[int, list] = {}
    for layer in layers:
        for parent in _parents(layer):
            consumers.setdefault(id(parent), []).append(layer)
    maps, folded = [], set()
    for layer in layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernel = np.asarray(layer.kernel.numpy(), float)
            kind = "conv" if isinstance(layer, keras.layers.Conv2D) else "dense"
            if kind == "conv" and (layer.groups != 1 or tuple(layer.dilation_rate) != (1, 1)):
                raise MeasureError(f"layer {layer.name!r}: grouped or dilated convolutions are "
                                   "not supported by the norm measures")
            bn_name = None
            after = consumers.get(id(layer), [])
            if fold_bn and len(after) == 1 and isinstance(after[0],
                                                          keras.layers.BatchNormalization):
                kernel = kernel * _bn_scale(after[0])
                bn_name = after[0].name
                folded.add(id(after[0]))
            shape = None
            if kind == "conv":
                shape = tuple(int(s) for s in layer.input.shape[1:])
            maps.append(LinearMap(layer.name, kind, kernel, shape,
                                  tuple(getattr(layer, "strides", (1, 1))),
                                  str(getattr(layer, "padding", "valid")), bn_name))
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization) and id(layer) not in folded:
            maps.append(LinearMap(layer.name, "bn", _bn_scale(layer), None))
    if not maps:
        raise MeasureError(f"model {model.name!r} has no Conv2D or Dense layer to take norms of")
    return maps


class NetworkMeasures:
    """Losses, gradients, per-example gradients and logits of ``model`` at any point of
    its trainable weights (a flat float64 vector, ``model.trainable_variables`` order),
    on ``(x, y)``; :meth:`refresh` re-reads the model's weights (after ``set_weights``)."""

    def __init__(self, model, x: np.ndarray, y: np.ndarray, chunk: int = 256,
                 pex_chunk: int = 32):
        import tensorflow as tf

        self.tf = tf
        self.model = model
        self.x = x
        self.y = np.asarray(y).astype("int32").reshape(-1)
        self.n = int(len(self.y))
        if self.n < 2:
            raise MeasureError("at least two training examples are needed for the measures")
        self.chunk = int(chunk)
        self.pex_chunk = int(pex_chunk)
        self.shapes = [tuple(int(s) for s in v.shape) for v in model.trainable_variables]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.d = int(sum(self.sizes))
        self.dtype = tf.as_dtype(model.trainable_variables[0].dtype)
        self._build()
        self.refresh()
        self._objective = None

    # -- weights
    def refresh(self) -> None:
        tf = self.tf
        self.nt = [tf.convert_to_tensor(v.value) for v in self.model.non_trainable_variables]
        self.w = np.concatenate([np.asarray(v.numpy(), float).reshape(-1)
                                 for v in self.model.trainable_variables])
        if self._objective_ready():
            self._objective.refresh()

    def _objective_ready(self) -> bool:
        return getattr(self, "_objective", None) is not None

    def split(self, flat: np.ndarray) -> list:
        out, at = [], 0
        for shape, size in zip(self.shapes, self.sizes):
            out.append(self.tf.constant(flat[at:at + size].reshape(shape), dtype=self.dtype))
            at += size
        return out

    def _chunks(self, chunk: int):
        for s in range(0, self.n, chunk):
            yield self.x[s:s + chunk], self.y[s:s + chunk]

    # -- traced functions
    def _build(self) -> None:
        tf = self.tf
        model = self.model

        def per_example(theta, nt, xb, yb):
            logits, _ = model.stateless_call(list(theta), list(nt), xb, training=False)
            return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits)

        def flat(parts, lead=None):
            if lead is None:
                return tf.concat([tf.reshape(p, [-1]) for p in parts], 0)
            return tf.concat([tf.reshape(p, [lead, -1]) for p in parts], 1)

        zero = tf.UnconnectedGradients.ZERO

        @tf.function(reduce_retracing=True)
        def loss_sum(theta, nt, xb, yb):
            return tf.reduce_sum(per_example(theta, nt, xb, yb))

        @tf.function(reduce_retracing=True)
        def loss_grad_sum(theta, nt, xb, yb):
            with tf.GradientTape() as tape:
                tape.watch(theta)
                loss = tf.reduce_sum(per_example(theta, nt, xb, yb))
            return loss, flat(tape.gradient(loss, theta, unconnected_gradients=zero))

        @tf.function(reduce_retracing=True)
        def gradient_moments(theta, nt, xb, yb):
            with tf.GradientTape() as tape:
                tape.watch(theta)
                losses = per_example(theta, nt, xb, yb)
            jac = tape.jacobian(losses, theta, unconnected_gradients=zero,
                                experimental_use_pfor=True)
            rows = flat(jac, lead=tf.shape(losses)[0])
            rows = tf.cast(rows, tf.float64)
            return tf.reduce_sum(rows, 0), tf.reduce_sum(tf.square(rows))

        @tf.function(reduce_retracing=True)
        def logits_of(theta, nt, xb):
            logits, _ = model.stateless_call(list(theta), list(nt), xb, training=False)
            return logits

        self._loss_sum, self._loss_grad_sum = loss_sum, loss_grad_sum
        self._gradient_moments, self._logits = gradient_moments, logits_of

    # -- evaluations (means over the examples, float64)
    def loss(self, flat: np.ndarray | None = None) -> float:
        theta = self.split(self.w if flat is None else flat)
        return sum(float(self._loss_sum(theta, self.nt, xb, yb))
                   for xb, yb in self._chunks(self.chunk)) / self.n

    def loss_and_gradient(self, flat: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        theta = self.split(self.w if flat is None else flat)
        total, grad = 0.0, np.zeros(self.d)
        for xb, yb in self._chunks(self.chunk):
            loss, g = self._loss_grad_sum(theta, self.nt, xb, yb)
            total += float(loss)
            grad += g.numpy()
        return total / self.n, grad / self.n

    def gradient_noise(self, flat: np.ndarray | None = None) -> dict:
        """:func:`numeric.gradient_noise` from every example's own gradient (a Jacobian
        of the per-example losses, ``pex_chunk`` examples at a time)."""
        theta = self.split(self.w if flat is None else flat)
        total, squares = np.zeros(self.d), 0.0
        for xb, yb in self._chunks(self.pex_chunk):
            s, q = self._gradient_moments(theta, self.nt, xb, yb)
            total += s.numpy()
            squares += float(q)
        return numeric.gradient_noise(self.n, total, squares)

    def logits(self, flat: np.ndarray | None = None) -> np.ndarray:
        theta = self.split(self.w if flat is None else flat)
        return np.concatenate([np.asarray(self._logits(theta, self.nt, xb), float)
                               for xb, _ in self._chunks(self.chunk)])

    def objective(self, examples: int | None = None):
        """The curvature package's :class:`~kerasgen.curvature.Objective` over every
        trainable variable (Hessian-vector products), built once."""
        if self._objective is None:
            from kerasgen.curvature import Objective, select_parameters

            m = self.n if examples is None else min(self.n, int(examples))
            self._objective = Objective(self.model, select_parameters(self.model, "all"),
                                        self.x[:m], self.y[:m], chunk=self.chunk)
        return self._objective


# ---------------------------------------------------------------- the measures

def norms(model, initial: list | None, fold_bn: bool = True, power_iters: int = 100,
          seed: int = 0) -> dict[str, tuple[float, dict]]:
    """The norm measures that need no data (``dist_init`` only when ``initial``, the
    initial weights in ``model.weights`` order, is given)."""
    out: dict[str, tuple[float, dict]] = {}
    started = time.perf_counter()
    maps = linear_maps(model, fold_bn)
    fro = np.array([np.linalg.norm(m.kernel) for m in maps])
    folded = [m.name + "+" + m.folded for m in maps if m.folded]
    common = {"layers": len(maps), "fold_bn": fold_bn, "bn_folded": len(folded),
              "bn_alone": sum(m.kind == "bn" for m in maps)}
    t_fro = time.perf_counter() - started
    out["sum_fro"] = (float(fro.sum()), {**common, "seconds": t_fro})
    out["log_prod_fro"] = (float(np.sum(np.log(fro))), {**common, "seconds": t_fro})
    started = time.perf_counter()
    logs, info = [], []
    for m in maps:
        if m.kind == "bn":
            sigma, it = float(np.max(np.abs(m.kernel))), {"method": "exact (diagonal)"}
        else:
            mat = m.matrix()
            sigma, it = numeric.power_iteration(lambda v, a=mat: a @ v, lambda u, a=mat: a.T @ u,
                                                (mat.shape[1],), power_iters, seed=seed)
        logs.append(math.log(sigma))
        info.append(it.get("converged", True))
    out["log_prod_spec"] = (float(np.sum(logs)), {
        **common, "operator": "reshaped kernel ((kh*kw*c_in) x c_out)",
        "iterations": power_iters, "all_converged": bool(all(info)),
        "seconds": time.perf_counter() - started})
    if initial is not None:
        started = time.perf_counter()
        by_path = {v.path: np.asarray(a, float) for v, a in zip(model.weights, initial)}
        sq = 0.0
        for v in model.trainable_variables:
            if v.path not in by_path:
                raise MeasureError(f"the initial weights have no variable {v.path!r}")
            sq += float(np.sum((np.asarray(v.numpy(), float) - by_path[v.path]) ** 2))
        out["dist_init"] = (math.sqrt(sq), {"variables": "every trainable variable",
                                           "seconds": time.perf_counter() - started})
    return out


def conv_spectral_norms(maps: list[LinearMap], iters: int = 50, seed: int = 0,
                        tol: float = 1e-6) -> tuple[float, dict]:
    """``sum log ||A_l||_2`` with ``A_l`` the linear operator each layer applies to its
    input (for a convolution: on one image of the layer's input shape, with its strides
    and padding; the transpose by ``conv2d_transpose``), by power iteration."""
    import tensorflow as tf

    total, details = 0.0, []
    for m in maps:
        if m.kind == "bn":
            sigma, it = float(np.max(np.abs(m.kernel))), {"converged": True}
        elif m.kind == "dense":
            mat = m.kernel
            sigma, it = numeric.power_iteration(lambda v, a=mat: a @ v, lambda u, a=mat: a.T @ u,
                                                (mat.shape[1],), iters, tol, seed=seed)
        else:
            kernel = tf.constant(m.kernel, tf.float64)
            shape = (1, *m.input_shape)
            strides = [1, *m.strides, 1]
            padding = m.padding.upper()
            out_shape = tf.nn.conv2d(tf.zeros(shape, tf.float64), kernel, strides, padding).shape

            def forward(v, k=kernel, s=strides, p=padding, shp=shape):
                return tf.nn.conv2d(tf.constant(v.reshape(shp)), k, s, p).numpy()

            def backward(u, k=kernel, s=strides, p=padding, shp=shape, o=out_shape):
                return tf.nn.conv2d_transpose(tf.constant(u.reshape(o)), k, shp, s, p).numpy()

            sigma, it = numeric.power_iteration(forward, backward, shape, iters, tol, seed=seed)
        total += math.log(sigma)
        details.append(bool(it.get("converged", True)))
    return total, {"operator": "the convolution on the layer's input shape (its own "
                               "strides and padding)", "iterations": iters,
                   "all_converged": bool(all(details)), "layers": len(maps)}


def path_norm(model) -> tuple[float, dict]:
    """``log sum_k f_{w^2}(1)_k``: the network run in inference mode on an all-ones
    image with every kernel squared, biases and BN shifts zero and each BN layer
    multiplying by ``s^2`` (``gamma <- s^2``, mean 0, variance ``1 - epsilon``), so a BN
    after a kernel squares the folded kernel ``W * s``. With non-negative weights and
    inputs every ReLU passes its input, so this is the sum over input-output paths of
    the product of squared weights (Neyshabur et al. 2015), the l2 path norm squared."""
    import keras
    import tensorflow as tf

    bn_eps = {layer.name: float(layer.epsilon) for layer in model.layers
              if isinstance(layer, keras.layers.BatchNormalization)}
    bns = {layer.name: layer for layer in model.layers
           if isinstance(layer, keras.layers.BatchNormalization)}
    trainable = []
    for v in model.trainable_variables:
        layer, _, kind = v.path.rpartition("/")
        value = np.asarray(v.numpy(), float)
        if kind == "kernel":
            value = value ** 2
        elif kind in ("bias", "beta"):
            value = np.zeros_like(value)
        elif kind == "gamma" and layer in bns:
            value = _bn_scale(bns[layer]) ** 2
        else:
            raise MeasureError(f"path norm: variable {v.path!r} is neither a kernel, a bias "
                               "nor a batch-normalization parameter")
        trainable.append(tf.constant(value, dtype=v.dtype))
    non_trainable = []
    for v in model.non_trainable_variables:
        layer, _, kind = v.path.rpartition("/")
        value = np.asarray(v.numpy(), float)
        if kind == "moving_mean":
            value = np.zeros_like(value)
        elif kind == "moving_variance":
            value = np.full_like(value, 1.0 - bn_eps.get(layer, 0.0))
        non_trainable.append(tf.constant(value, dtype=v.dtype))
    ones = tf.ones((1, *model.inputs[0].shape[1:]), dtype=model.inputs[0].dtype)
    out, _ = model.stateless_call(trainable, non_trainable, ones, training=False)
    total = float(np.sum(np.asarray(out, float)))
    if not total > 0:
        raise MeasureError(f"path norm: the squared-weight network output {total:g} is not "
                           "positive")
    return math.log(total), {"input": "all ones, one image", "biases": "zero",
                             "fold_bn": True, "value": total}


def output_margin(net: NetworkMeasures, percentile: float = 10.0) -> tuple[float, dict]:
    """The ``percentile``-th percentile over the examples of ``logit_y - max_{j != y}
    logit_j`` (negative where an example is misclassified)."""
    logits = net.logits()
    idx = np.arange(len(net.y))
    true = logits[idx, net.y]
    others = logits.copy()
    others[idx, net.y] = -np.inf
    margins = true - others.max(axis=1)
    return float(np.percentile(margins, percentile)), {
        "percentile": percentile, "examples": net.n, "median": float(np.median(margins)),
        "misclassified": int(np.sum(margins <= 0))}


def hessian_top(net: NetworkMeasures, steps: int = 20, examples: int | None = None,
                seed: int = 0) -> tuple[float, dict]:
    obj = net.objective(examples)
    value, info = numeric.top_eigenvalue(obj.hvp, obj.d, steps, seed)
    return value, {**info, "examples": obj.n}


def hessian_trace(net: NetworkMeasures, probes: int = 10, examples: int | None = None,
                  seed: int = 0) -> tuple[float, dict]:
    obj = net.objective(examples)
    value, info = numeric.hutchinson_trace(obj.hvp, obj.d, probes, seed)
    return value, {**info, "examples": obj.n}


def eps_sharpness(net: NetworkMeasures, epsilon: float = 5e-4, steps: int = 10
                  ) -> tuple[float, dict]:
    """Keskar et al. (2017), with ``A = I``: ``100 (max_{|delta_i| <= eps (|w_i| + 1)}
    L(w + delta) - L(w)) / (1 + L(w))``, by :func:`numeric.box_ascent`."""
    w = net.w
    result = numeric.box_ascent(lambda delta: net.loss_and_gradient(w + delta),
                                epsilon * (np.abs(w) + 1.0), steps)
    rise = result["max"] - result["base"]
    return 100.0 * rise / (1.0 + result["base"]), {
        "epsilon": epsilon, "steps": steps, "loss": result["base"], "loss_max": result["max"],
        "evaluations": result["evaluations"]}


def adaptive_sharpness(net: NetworkMeasures, rho: float = 0.5, eta: float = 0.01,
                       steps: int = 10) -> tuple[float, dict]:
    """``max_{||delta / (|w| + eta)||_2 <= rho} L(w + delta) - L(w)``
    (:func:`numeric.ellipsoid_ascent`)."""
    w = net.w
    result = numeric.ellipsoid_ascent(lambda delta: net.loss_and_gradient(w + delta),
                                      np.abs(w) + eta, rho, steps)
    return result["max"] - result["base"], {
        "rho": rho, "eta": eta, "steps": steps, "loss": result["base"],
        "loss_max": result["max"], "evaluations": result["evaluations"]}


def pacbayes_flatness(net: NetworkMeasures, magnitude: bool = False, target: float = 0.1,
                      samples: int = 3, steps: int = 8, epsilon: float = 1e-3,
                      seed: int = 0) -> tuple[float, dict]:
    """``1 / sigma'^2`` with ``sigma'`` from :func:`numeric.pacbayes_sigma` on the mean
    training loss (Jiang et al. 2020's pacbayes.flatness and pacbayes.mag.flatness)."""
    sigma, info = numeric.pacbayes_sigma(net.loss, net.w, magnitude, target, samples, steps,
                                         epsilon, seed)
    return (1.0 / sigma ** 2 if sigma > 0 else math.inf), {"sigma": sigma, **info}


def gradient_noise_measures(net: NetworkMeasures) -> dict:
    started = time.perf_counter()
    noise = net.gradient_noise()
    noise["seconds"] = time.perf_counter() - started
    return noise


MeasureFunction = Callable[..., tuple[float, dict]]

__all__ = ["LinearMap", "NetworkMeasures", "adaptive_sharpness", "conv_spectral_norms",
           "eps_sharpness", "gradient_noise_measures", "hessian_top", "hessian_trace",
           "linear_maps", "norms", "output_margin", "pacbayes_flatness", "path_norm"]
