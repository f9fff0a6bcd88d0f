"""Estimating A (Hessian) and C (per-example gradient covariance) of a trained Keras
network, and the PAC-Bayes bound terms of He, Liu & Tao (2019, Section 3) from them.

What is estimated
-----------------
At a cell's final weights ``theta*``, on its training set (normalized, *without*
augmentation -- CIFAR trains with pad-crop-flip, but A and C are taken on the plain
training images; BN in inference mode, i.e. ``training=False`` with the moving
statistics), for a chosen set of parameters ``theta`` (all others fixed):

* ``A = grad^2_theta L(theta*)`` with ``L = (1/n) sum_i l_i`` the mean training loss
  (sparse softmax cross-entropy on the logits, the loss the runner trains with);
* ``C = (1/n) sum_i (g_i - g)(g_i - g)^T`` with ``g_i = grad l_i`` and ``g`` their mean:
  the covariance of the per-example gradients, mean-centred, ``ddof = 0`` (``np.cov(G.T,
  bias=True)``).

``n`` is the number of training examples used (all, or a deterministic subset of
``max_examples``: ``numpy.random.default_rng(0).choice`` without replacement, sorted);
the bound is always evaluated with ``N`` = the full training-set size.

Parameter sets (:func:`select_parameters`)
------------------------------------------
``"classifier"``: the final Dense layer's kernel and bias (ResNet on 10 classes: 64*10+10
= 650; VGG with the paper's width: 512*10+10; ``vgg11_w16`` on 8x8 inputs: 128*10+10 =
1290); ``"all"``: every trainable variable; or an explicit list of variable paths
(``"stage3_block1_bn2/gamma"``) and/or layer names (all trainable variables of that
layer).  The selection, its size ``d`` and the estimator are printed per cell and
recorded in the ``bounds`` row (``params``, ``n_params``, ``estimator``,
``report_json``).

Estimators
----------
*Exact (dense)* -- ``estimator="exact-dense"``, used when ``d <= exact_limit`` (5000):

* ``A``: every column is a Hessian-vector product with a unit vector (reverse-over-
  reverse: the gradient of ``<grad L, e_j>``), vectorized ``pfor_rows`` at a time by
  ``GradientTape.jacobian`` (pfor) of the gradient, summed over chunks of examples, then
  symmetrized (the asymmetry before symmetrizing is recorded).  When the selection is
  exactly the final linear Dense layer, the network below it is fixed, so its output
  (the features) is computed once and the HVPs run through the head only, in float64.
  Otherwise the whole network runs (float32, the model's dtype) with the selected
  variables substituted (``model.stateless_call``).
* ``C``: per-example gradients (``GradientTape.jacobian`` of the vector of per-example
  losses, pfor), then the covariance above, accumulated in float64.
* Errors: round-off only -- about 1e-15 relative on the float64 head path, about 1e-6
  relative (float32) on the network path.

*Whole network (matrix-free)* -- ``estimator="lanczos-subspace"``, used for ``"all"``
(or any ``d > exact_limit``); no d x d matrix is formed:

* Lanczos with full reorthogonalization on ``A`` (one HVP per step, ``lanczos_steps``
  steps) spans a Krylov subspace ``K`` dominated by the top of the Hessian spectrum.
  ``Q^T A Q = T`` holds exactly on it, so the Ritz vectors ``U`` with Ritz values above
  the threshold give ``U^T A U = diag(theta)`` exactly (up to float32 HVP round-off);
  ``U^T C U`` is exact too, from the per-example directional derivatives ``G U``
  (forward-mode JVPs, one per kept direction).  The bound is then evaluated *exactly*
  (Lyapunov solve, Theorems 1 and 2) for SGD restricted to ``U`` (the same
  "posterior = prior outside U" reading as the projection below).  What is approximate
  is that ``U`` is only approximately the top eigenspace: each Ritz pair's residual
  ``||A u - theta u||`` is recorded (``ritz_residuals``, ``ritz_residual_max_kept``).
* Whole-space diagnostics (``whole_space=True``), with the damped ``A_l = A + l I``
  (``l = damping_rtol * lambda_max``, raised to ``2 |lambda_min|`` when Lanczos saw
  negative curvature; recorded):

  - ``tr(C A_l^-1)`` by conjugate-gradient solves: ``C = E[z z^T]`` for
    ``z = sum_i xi_i (g_i - g) / sqrt(n)`` with Rademacher ``xi`` (one reverse pass per
    probe), so ``tr(A_l^-1 C) = E[z^T A_l^-1 z]``; the estimate is the mean over
    ``cg_probes`` probes, its error the standard error across probes; a CG solve that
    stops before ``cg_tol`` underestimates ``z^T A_l^-1 z`` (CG's energy estimate
    increases monotonically) and is flagged (``converged``).
  - ``log det A_l`` by stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017):
    ``d * sum_j tau_j^2 log theta_j`` per Rademacher probe (``slq_probes`` probes of
    ``slq_steps`` Lanczos steps); error = standard error across probes (Monte Carlo);
    the quadrature's own bias is gauged by the change from ``slq_steps/2`` to
    ``slq_steps`` steps (``quadrature_change``).
  - ``log det C``: ``C`` has rank at most ``n - 1``; when ``n - 1 < d`` (always for
    the demo's networks: 1,347 images, 78k / 580k parameters) it is singular, so
    ``log det C = -inf``: the commuting form ``Sigma = (eta/(2|S|)) C A^-1`` of
    Theorem 2 is singular, KL(Q||P) is infinite and the paper's bound on the whole
    network is vacuous -- recorded as such, not estimated.  When ``n - 1 >= d`` it is
    estimated by SLQ on ``C`` (matrix-free ``C v = (1/n) G^T (G v) - g (g^T v)``, a
    JVP and a VJP) and the Theorem-2 form
    ``log det Sigma = d log(eta/(2|S|)) + log det C - log det A_l`` is reported.
  - Assumption 2 / ``r* = tr(C A^-1)/(2d)`` on the whole network need only the trace:
    they are reported from the CG estimate.

  The whole-space HVPs use ``hvp_examples`` examples (a deterministic subset) so that
  they fit in minutes; ``A`` is then the Hessian of the mean loss over that subset.

Positive definiteness (``treatment``)
--------------------------------------
The bound needs ``A`` positive definite; a trained network's ``A`` is not: the softmax
is invariant to adding the same vector to every class's weights (an exact null space of
dimension features + 1: 65 of ResNet-8's 650 classifier parameters), dead ReLU features
add more, and parameters below the head can have negative curvature.  ``C`` vanishes on
the exact symmetries too, and is often numerically singular beyond them (for the
demo's VGG head its spectrum runs continuously down to 1e-20 of its largest
eigenvalue), so damping A alone leaves ``Sigma`` singular there (KL infinite).

* ``"project"`` (default): eigendecompose ``A = V diag(lambda) V^T``, keep the
  directions with ``lambda > rtol * lambda_max``; within them, keep the eigen-directions
  of ``U^T C U`` above ``rtol`` times its largest eigenvalue; evaluate the bound on the
  resulting subspace.  This is exactly the McAllester bound for the posterior that is
  SGD's stationary law (eq. 17) on the kept subspace and equals the prior N(0, I) on
  the discarded directions, which then add nothing to KL -- a valid PAC-Bayes posterior
  (McAllester's bound holds for every Q), but not the paper's Q on the discarded
  directions, where the quadratic model has no stationary law (flat or negative
  curvature) or SGD no noise.  ``rtol`` defaults to the precision of the computation
  (``AUTO_RTOL``: 1e-9 for the float64 head path, 1e-5 for the float32 network path),
  i.e. only numerically-zero directions are dropped.  The result depends on this
  threshold (near-flat directions dominate ``tr(C A^-1)`` and ``log det Sigma``): every
  exact row records ``sensitivity`` -- d_eff, ``tr(C A^-1)``, Theorems 1 and 2 at
  rtol = 1e-12, 1e-9, 1e-6, 1e-3 -- and ``d_eff`` itself, which varies across cells.
  Recorded: ``d_eff``, how many directions each step discarded, how many were negative,
  the eigenvalue range of A and C.
* ``"damp"`` (``CurvatureConfig(treatment="damp")``): ``A`` replaced by
  ``V diag(max(lambda, 0) + l) V^T``, ``l = damping_rtol * lambda_max`` (recorded);
  ``C`` unchanged, so where ``C`` is singular KL is infinite and Theorem 2 undefined
  (``theorem2_reason``).

Either way the choice, the thresholds/damping and the eigenvalue statistics go into
``report_json``; nothing is changed silently.

Evaluation and speed
--------------------
The bound terms are those of :func:`kerasgen.theory.evaluate_bounds`, computed by
:func:`evaluate_bounds_eig`: the same theory functions, with the two Lyapunov equations
solved in A's eigenbasis (A is diagonal there after the treatment) instead of scipy's
Bartels-Stewart solver, which took ~12 s per solve at d = 1161 on 2 cores; the tests
check both give the same report.  numpy's BLAS is held to one thread while bounds are
computed: multi-threaded OpenBLAS next to TensorFlow's thread pools made a 1161 x 1161
``eigvalsh`` 20x slower.  On the demo store (32 cells, 1,347 images) ``kerasgen bound``
(classifier) takes about 2 minutes on 2 cores; ``--params all`` about 1.5 minutes per
ResNet-8 cell with the defaults.

Public API
----------
- ``CurvatureConfig`` (all knobs above), ``CurvatureError``
- ``select_parameters(model, params) -> ParameterSelection``
- ``Objective(model, selection, x, y, chunk)``: ``loss_and_gradient()``, ``hvp(v)``,
  ``hessian()``, ``per_example_gradients()``, ``jvp_examples(v)``, ``vjp_examples(w)``,
  ``c_matvec(v)``
- ``gradient_covariance(G)``, ``treat_dense(A, C, ...)``, ``evaluate_bounds_eig(...)``,
  ``projection_sensitivity(...)``, ``lanczos(...)``, ``ritz_pairs(...)``,
  ``slq_logdet(...)``, ``conjugate_gradient(...)``, ``trace_CAinv_cg(...)``
- ``estimate_curvature(model, x, y, params, config) -> CurvatureEstimate``
- ``bound_terms(estimate, learning_rate, batch_size, n, delta) -> dict`` (the
  ``BoundReport`` fields, plus ``sensitivity`` and, matrix-free, ``whole_space``)
- ``compute_bounds_for_store(db, study=None, cells=None, params="classifier",
  delta=0.05, data_dir="data", checkpoint_dir=None, max_examples=None,
  recompute=False) -> list[dict]``   (``kerasgen bound``)
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from kerasgen.store import StoreError

__all__ = [
    "CurvatureConfig", "CurvatureError", "CurvatureEstimate", "Objective",
    "ParameterSelection", "bound_terms", "compute_bounds_for_store", "conjugate_gradient",
    "estimate_curvature", "evaluate_bounds_eig", "gradient_covariance", "lanczos",
    "projection_sensitivity", "ritz_pairs", "select_parameters", "slq_logdet",
    "trace_CAinv_cg", "treat_dense",
]


class CurvatureError(StoreError):
    """The bound cannot be computed as asked; the message says why and what to do.
    (A :class:`~kerasgen.store.StoreError`, so ``kerasgen bound`` prints it plainly.)"""


@dataclass(frozen=True)
class CurvatureConfig:
    """How A and C are estimated (see the module docstring)."""

    exact_limit: int = 5000          # dense matrices up to this many parameters
    treatment: str = "project"       # "project" | "damp"
    project_rtol: float | None = None  # keep directions with eigenvalue > rtol * max
                                       # (None: AUTO_RTOL by precision, 1e-9 / 1e-5)
    damping_rtol: float = 1e-3       # "damp" and whole-space solves: l = rtol * lambda_max
    chunk: int = 256                 # examples per TensorFlow call (network path)
    pfor_rows: int = 128             # Hessian rows vectorized at once (network path)
    seed: int = 0                    # probes and example subsets
    # whole network (matrix-free)
    lanczos_steps: int = 40
    whole_space: bool = True
    hvp_examples: int | None = 512   # examples behind whole-space HVPs (None: all used)
    cg_probes: int = 3
    cg_tol: float = 1e-3
    cg_maxiter: int = 150
    slq_probes: int = 4
    slq_steps: int = 24

    def __post_init__(self):
        if self.treatment not in ("project", "damp"):
            raise CurvatureError(f"treatment must be 'project' or 'damp', not {self.treatment!r}")


# ---------------------------------------------------------------- parameter selection

@dataclass(frozen=True)
class ParameterSelection:
    """Which trainable variables ``theta`` is made of (in ``model.trainable_variables``
    order), and whether they are exactly the final linear Dense layer (``head``)."""

    kind: str                        # "classifier" | "all" | "explicit"
    paths: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    indices: tuple[int, ...]
    head: str | None = None          # layer name when theta = (kernel, bias) of the head

    @property
    def d(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))

    @property
    def label(self) -> str:
        return self.kind if self.kind != "explicit" else ",".join(self.paths)

    def describe(self) -> str:
        parts = ", ".join(f"{p} {tuple(s)}" for p, s in zip(self.paths, self.shapes))
        if len(self.paths) > 6:
            parts = (", ".join(f"{p} {tuple(s)}" for p, s in zip(self.paths[:3], self.shapes[:3]))
                     + f", ... ({len(self.paths)} variables)")
        return f"{self.kind}: d={self.d} ({parts})"


def _final_dense(model):
    import keras

    out = model.outputs[0] if getattr(model, "outputs", None) else None
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.Dense):
            is_output = out is not None and getattr(layer, "output", None) is out
            return layer, is_output
    return None, False


def select_parameters(model, params: str | Sequence[str] = "classifier") -> ParameterSelection:
    """``"classifier"`` (final Dense kernel + bias), ``"all"`` (every trainable
    variable), or a list of variable paths / layer names."""
    import keras

    trainable = list(model.trainable_variables)
    paths = [v.path for v in trainable]
    if isinstance(params, str) and params == "classifier":
        layer, is_output = _final_dense(model)
        if layer is None:
            raise CurvatureError(f"model {model.name!r} has no Dense layer to call its classifier")
        wanted = {id(v) for v in layer.trainable_variables}
        idx = [i for i, v in enumerate(trainable) if id(v) in wanted]
        linear = getattr(layer, "activation", None) is keras.activations.linear
        head = layer.name if (is_output and linear and len(idx) == len(wanted)
                              and len(layer.trainable_variables) in (1, 2)) else None
        kind = "classifier"
    elif isinstance(params, str) and params == "all":
        idx, head, kind = list(range(len(trainable))), None, "all"
    else:
        names = [params] if isinstance(params, str) else list(params)
        if not names:
            raise CurvatureError("an explicit parameter list must name at least one variable")
        chosen: list[int] = []
        for name in names:
            hits = [i for i, p in enumerate(paths) if p == name or p.startswith(name + "/")]
            if not hits:
                shown = ", ".join(paths[:8]) + (", ..." if len(paths) > 8 else "")
                raise CurvatureError(
                    f"{name!r} names no trainable variable or layer of model {model.name!r}; "
                    f"use 'classifier', 'all', or variable paths such as: {shown}")
            chosen.extend(h for h in hits if h not in chosen)
        idx, head, kind = sorted(chosen), None, "explicit"
        layer, is_output = _final_dense(model)
        if layer is not None and is_output:
            head_ids = {id(v) for v in layer.trainable_variables}
            if ({id(trainable[i]) for i in idx} == head_ids
                    and getattr(layer, "activation", None) is keras.activations.linear):
                head = layer.name
    return ParameterSelection(kind=kind, paths=tuple(paths[i] for i in idx),
                              shapes=tuple(tuple(int(s) for s in trainable[i].shape) for i in idx),
                              indices=tuple(idx), head=head)


# ---------------------------------------------------------------- the objective

class Objective:
    """The mean training loss over ``(x, y)`` as a function of the selected parameters,
    at the model's current weights (others fixed, BN in inference mode).

    Vectors in and out are flat float64 numpy arrays of length ``d`` (the selected
    variables raveled in order).  ``refresh()`` re-reads the model's weights (after
    ``set_weights`` for the next cell) without retracing anything.
    """

    def __init__(self, model, selection: ParameterSelection, x: np.ndarray, y: np.ndarray,
                 chunk: int = 256, pfor_rows: int = 128):
        import tensorflow as tf

        self.tf = tf
        self.model = model
        self.selection = selection
        self.x_input = x
        self.y = np.asarray(y).astype("int32").reshape(-1)
        self.n = int(len(self.y))
        if self.n < 1:
            raise CurvatureError("no training examples to estimate A and C on")
        self.d = selection.d
        self.pfor_rows = int(pfor_rows)
        self.mode = "head" if selection.head is not None else "network"
        # The head path is cheap per example: big chunks (fewer calls).
        self.chunk = min(self.n, 4096) if self.mode == "head" else int(chunk)
        self._build_functions()
        self.refresh()

    # -- weights and data
    def refresh(self) -> None:
        tf = self.tf
        model = self.model
        if self.mode == "head":
            layer = model.get_layer(self.selection.head)
            if not hasattr(self, "_features_fn"):
                body = __import__("keras").Model(model.inputs, layer.input)
                self._features_fn = tf.function(lambda xb: body(xb, training=False),
                                                reduce_retracing=True)
            feats = [self._features_fn(tf.convert_to_tensor(self.x_input[s:s + 512])).numpy()
                     for s in range(0, len(self.x_input), 512)]
            self.x = np.concatenate(feats).astype("float64")
            self.dtype = tf.float64
            tv = model.trainable_variables
            self.theta0 = [tf.constant(np.asarray(tv[i].numpy(), "float64"))
                           for i in self.selection.indices]
            self._fixed, self._non_trainable = [], []
        else:
            self.x = self.x_input
            self.dtype = tf.as_dtype(model.trainable_variables[self.selection.indices[0]].dtype)
            self._fixed = [tf.convert_to_tensor(v.value) for v in model.trainable_variables]
            self._non_trainable = [tf.convert_to_tensor(v.value)
                                   for v in model.non_trainable_variables]
            self.theta0 = [self._fixed[i] for i in self.selection.indices]

    def _chunks(self):
        for s in range(0, self.n, self.chunk):
            yield self.x[s:s + self.chunk], self.y[s:s + self.chunk]

    def split(self, flat: np.ndarray) -> list:
        out, at = [], 0
        for shape in self.selection.shapes:
            size = int(np.prod(shape))
            out.append(self.tf.constant(np.asarray(flat[at:at + size]).reshape(shape),
                                        dtype=self.dtype))
            at += size
        return out

    # -- the traced functions
    def _build_functions(self) -> None:
        tf = self.tf
        model = self.model
        indices = self.selection.indices
        head = self.mode == "head"
        zero = tf.UnconnectedGradients.ZERO
        rows = self.pfor_rows

        def per_example(theta, fixed, non_trainable, xb, yb):
            if head:
                logits = tf.matmul(xb, theta[0])
                if len(theta) > 1:
                    logits = logits + theta[1]
            else:
                values = list(fixed)
                for j, i in enumerate(indices):
                    values[i] = theta[j]
                logits, _ = model.stateless_call(values, list(non_trainable), xb, training=False)
            return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits)

        def flat(parts, lead=None):
            if lead is None:
                return tf.concat([tf.reshape(p, [-1]) for p in parts], 0)
            return tf.concat([tf.reshape(p, [lead, -1]) for p in parts], 1)

        @tf.function(reduce_retracing=True)
        def grad_sum(theta, fixed, nt, xb, yb):
            with tf.GradientTape() as tape:
                tape.watch(theta)
                loss = tf.reduce_sum(per_example(theta, fixed, nt, xb, yb))
            return loss, flat(tape.gradient(loss, theta, unconnected_gradients=zero))

        def summed_gradient(theta, fixed, nt, xb, yb):
            """Gradient of the summed loss; called under an outer tape that watches
            ``theta``, which then differentiates it a second time."""
            with tf.GradientTape() as inner:
                inner.watch(theta)
                loss = tf.reduce_sum(per_example(theta, fixed, nt, xb, yb))
            return inner.gradient(loss, theta, unconnected_gradients=zero)

        @tf.function(reduce_retracing=True)
        def hvp_sum(theta, v, fixed, nt, xb, yb):
            with tf.GradientTape() as outer:
                outer.watch(theta)
                g = summed_gradient(theta, fixed, nt, xb, yb)
                dot = tf.add_n([tf.reduce_sum(a * b) for a, b in zip(g, v)])
            return flat(outer.gradient(dot, theta, unconnected_gradients=zero))

        @tf.function(reduce_retracing=True)
        def hessian_rows(theta, fixed, nt, xb, yb, start):
            # Row j is the HVP with e_j (the gradient of <grad L, e_j>); a block of
            # ``rows`` of them is vectorized by pfor. (The blocks are sliced here, not by
            # jacobian's parallel_iterations, which returned wrong rows in TF 2.21 when
            # it was smaller than the number of rows.)
            with tf.GradientTape() as outer:
                outer.watch(theta)
                g = flat(summed_gradient(theta, fixed, nt, xb, yb))
                block = g[start:start + rows]
            jac = outer.jacobian(block, theta, unconnected_gradients=zero,
                                 experimental_use_pfor=True)
            return flat(jac, lead=tf.shape(block)[0])

        @tf.function(reduce_retracing=True)
        def per_example_grads(theta, fixed, nt, xb, yb):
            with tf.GradientTape() as tape:
                tape.watch(theta)
                losses = per_example(theta, fixed, nt, xb, yb)
            jac = tape.jacobian(losses, theta, unconnected_gradients=zero,
                                experimental_use_pfor=True)
            return flat(jac, lead=tf.shape(losses)[0])

        @tf.function(reduce_retracing=True)
        def jvp(theta, v, fixed, nt, xb, yb):
            with tf.autodiff.ForwardAccumulator(primals=theta, tangents=v) as acc:
                losses = per_example(theta, fixed, nt, xb, yb)
            return acc.jvp(losses, unconnected_gradients=zero)

        @tf.function(reduce_retracing=True)
        def vjp(theta, w, fixed, nt, xb, yb):
            with tf.GradientTape() as tape:
                tape.watch(theta)
                s = tf.reduce_sum(per_example(theta, fixed, nt, xb, yb) * w)
            return flat(tape.gradient(s, theta, unconnected_gradients=zero))

        self._fn = dict(grad=grad_sum, hvp=hvp_sum, hessian=hessian_rows,
                        pex=per_example_grads, jvp=jvp, vjp=vjp)

    def _args(self):
        return self.theta0, self._fixed, self._non_trainable

    # -- the public products (float64 numpy)
    def loss_and_gradient(self) -> tuple[float, np.ndarray]:
        total, grad = 0.0, np.zeros(self.d)
        for xb, yb in self._chunks():
            loss, g = self._fn["grad"](*self._args(), xb, yb)
            total += float(loss)
            grad += g.numpy()
        return total / self.n, grad / self.n

    def hvp(self, v: np.ndarray) -> np.ndarray:
        """``A v`` (one Hessian-vector product over all examples)."""
        tv = self.split(v)
        out = np.zeros(self.d)
        for xb, yb in self._chunks():
            out += self._fn["hvp"](self.theta0, tv, self._fixed, self._non_trainable,
                                   xb, yb).numpy()
        return out / self.n

    def hessian(self) -> tuple[np.ndarray, float]:
        """Dense ``A`` (d x d, symmetrized) and the relative asymmetry before that."""
        H = np.zeros((self.d, self.d))
        rows = self.pfor_rows
        for xb, yb in self._chunks():
            for start in range(0, self.d, rows):
                block = self._fn["hessian"](*self._args(), xb, yb, self.tf.constant(start))
                H[start:start + rows] += block.numpy()
        H /= self.n
        scale = float(np.max(np.abs(H))) or 1.0
        asym = float(np.max(np.abs(H - H.T))) / scale
        return (H + H.T) / 2.0, asym

    def per_example_gradients(self) -> np.ndarray:
        """``G`` (n x d): row i is the gradient of example i's loss."""
        return np.concatenate([self._fn["pex"](*self._args(), xb, yb).numpy().astype("float64")
                               for xb, yb in self._chunks()])

    def jvp_examples(self, v: np.ndarray) -> np.ndarray:
        """``G v`` (n,): each example's directional derivative along v (forward mode)."""
        tv = self.split(v)
        return np.concatenate([
            self._fn["jvp"](self.theta0, tv, self._fixed, self._non_trainable, xb, yb)
            .numpy().astype("float64") for xb, yb in self._chunks()])

    def vjp_examples(self, w: np.ndarray) -> np.ndarray:
        """``G^T w`` (d,) = the gradient of ``sum_i w_i l_i``."""
        out = np.zeros(self.d)
        for s, (xb, yb) in zip(range(0, self.n, self.chunk), self._chunks()):
            wb = self.tf.constant(np.asarray(w[s:s + self.chunk]), dtype=self.dtype)
            out += self._fn["vjp"](self.theta0, wb, self._fixed, self._non_trainable,
                                   xb, yb).numpy()
        return out

    def c_matvec(self, v: np.ndarray, gbar: np.ndarray | None = None) -> np.ndarray:
        """``C v = (1/n) G^T (G v) - g (g^T v)`` without forming G (a JVP and a VJP)."""
        if gbar is None:
            gbar = self.loss_and_gradient()[1]
        return self.vjp_examples(self.jvp_examples(v)) / self.n - gbar * float(gbar @ v)


def gradient_covariance(G: np.ndarray) -> np.ndarray:
    """``C = (1/n) sum_i (g_i - g)(g_i - g)^T`` (mean-centred, ddof=0), symmetric."""
    G = np.asarray(G, dtype=float)
    centred = G - G.mean(axis=0)
    C = centred.T @ centred / G.shape[0]
    return (C + C.T) / 2.0


# ---------------------------------------------------------------- treatment of A and C

#: ``project_rtol`` when the config leaves it ``None``: relative eigenvalues below this
#: are indistinguishable from 0 at the precision A and C were computed in.
AUTO_RTOL = {"float64": 1e-9, "float32": 1e-5}


def _eig_stats(lam: np.ndarray) -> dict:
    top = max(abs(float(lam[-1])), 1e-300)
    return {"max": float(lam[-1]), "min": float(lam[0]),
            "n_negative": int(np.sum(lam < 0)),
            "n_below_1e-12_rel": int(np.sum(lam <= 1e-12 * top))}


def _project(lam: np.ndarray, Ct: np.ndarray, rtol: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """Given ``A = diag(lam)`` and ``C = Ct`` in A's eigenbasis: keep the directions
    with ``lam > rtol * max(lam)``, then, within them, the eigen-directions of C with
    eigenvalue ``> rtol * max``; returns ``(A_t, C_t, info)`` in an orthonormal basis
    of the kept subspace (A_t diagonal)."""
    lam_max = float(lam.max())
    keep = lam > rtol * lam_max
    A1, C1 = lam[keep], Ct[np.ix_(keep, keep)]
    c, W = np.linalg.eigh((C1 + C1.T) / 2.0)
    keep_c = c > rtol * max(float(c[-1]), 1e-300)
    info = {"project_rtol": rtol, "threshold_A": rtol * lam_max,
            "d_after_A": int(keep.sum()), "n_discarded_A": int((~keep).sum()),
            "n_discarded_negative": int(np.sum(lam < 0)),
            "n_discarded_C": int((~keep_c).sum())}
    if keep_c.all():
        A_t, C_t = np.diag(A1), C1
    else:
        Wk = W[:, keep_c]
        A2 = (Wk.T * A1) @ Wk
        lam2, V2 = np.linalg.eigh((A2 + A2.T) / 2.0)
        A_t = np.diag(lam2)
        C_t = V2.T @ np.diag(c[keep_c]) @ V2
    info["d_eff"] = int(A_t.shape[0])
    info["kept_lambda_min"] = float(np.min(np.diag(A_t))) if A_t.size else None
    return A_t, (C_t + C_t.T) / 2.0, info


def treat_dense(A: np.ndarray, C: np.ndarray, treatment: str = "project",
                project_rtol: float = 1e-9, damping_rtol: float = 1e-3
                ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Make ``A`` positive definite as documented (module docstring, "treatment").

    Returns ``(A_t, C_t, info)`` expressed in an orthonormal eigenbasis of ``A_t`` (so
    ``A_t`` is diagonal); every bound term is invariant under that change of basis.
    ``"project"`` restricts to the kept subspace (``A_t`` is d_eff x d_eff).
    """
    A = (np.asarray(A, float) + np.asarray(A, float).T) / 2.0
    C = (np.asarray(C, float) + np.asarray(C, float).T) / 2.0
    lam, V = np.linalg.eigh(A)
    lam_max = float(lam[-1])
    if not lam_max > 0:
        raise CurvatureError(f"the Hessian has no positive curvature (largest eigenvalue "
                             f"{lam_max:.3g}); the bound needs A > 0 somewhere")
    Ct = V.T @ C @ V
    info: dict[str, Any] = {"treatment": treatment, "A_eigenvalues": _eig_stats(lam),
                            "C_eigenvalues": _eig_stats(np.linalg.eigvalsh(C))}
    info["_eig"] = (lam, Ct)  # popped by estimate_curvature (for the sensitivity record)
    if treatment == "project":
        A_t, C_t, more = _project(lam, Ct, project_rtol)
        info.update(more)
        info["note"] = ("bound evaluated on the subspace where A's eigenvalues and then C's "
                        "exceed project_rtol * their largest; posterior = prior N(0, I) on "
                        "the discarded directions (they add nothing to KL)")
    elif treatment == "damp":
        damping = damping_rtol * lam_max
        A_t = np.diag(np.clip(lam, 0.0, None) + damping)
        C_t = (Ct + Ct.T) / 2.0
        info.update({"damping_rtol": damping_rtol, "damping": damping, "d_eff": int(len(lam)),
                     "n_clipped_negative": int(np.sum(lam < 0)),
                     "note": "A replaced by V diag(max(lambda, 0) + damping) V^T; C unchanged"})
    else:
        raise CurvatureError(f"treatment must be 'project' or 'damp', not {treatment!r}")
    return A_t, _clip_round_off(C_t), info


def _clip_round_off(C: np.ndarray) -> np.ndarray:
    """Round-off can leave eigenvalues like -1e-18 on a PSD matrix; clip those only."""
    C = (C + C.T) / 2.0
    w, V = np.linalg.eigh(C)
    if w[0] >= 0:
        return C
    if w[0] < -1e-10 * max(abs(w[-1]), 1e-300):
        raise CurvatureError(f"C has a clearly negative eigenvalue {w[0]:.3g} (largest "
                             f"{w[-1]:.3g}); it is not a covariance")
    C = (V * np.clip(w, 0.0, None)) @ V.T
    return (C + C.T) / 2.0


def evaluate_bounds_eig(A: np.ndarray, C: np.ndarray, learning_rate: float, batch_size: float,
                        n: float, delta: float = 0.05, prior_variance: float = 1.0):
    """:func:`kerasgen.theory.evaluate_bounds` (which solves both Lyapunov equations in
    A's eigenbasis, fast at the sizes used here)."""
    from kerasgen import theory as T

    return T.evaluate_bounds(A, C, learning_rate, batch_size, n, delta, prior_variance)


# ---------------------------------------------------------------- Lanczos, SLQ, CG

def lanczos(matvec: Callable[[np.ndarray], np.ndarray], v0: np.ndarray, steps: int,
            reorthogonalize: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``steps`` Lanczos steps from ``v0``: returns ``(alpha, beta, Q, beta_next)`` with
    ``Q^T A Q = tridiag(beta, alpha, beta)`` (``Q`` d x k, k <= steps; fewer when an
    invariant subspace is found). Full reorthogonalization (twice) keeps Q orthonormal."""
    d = len(v0)
    steps = int(min(steps, d))
    Q = np.zeros((d, steps))
    alpha, beta = [], []
    q = np.asarray(v0, float) / np.linalg.norm(v0)
    q_prev, b_prev = np.zeros(d), 0.0
    beta_next = 0.0
    for j in range(steps):
        Q[:, j] = q
        w = matvec(q) - b_prev * q_prev
        a = float(q @ w)
        w = w - a * q
        if reorthogonalize:
            for _ in range(2):
                w -= Q[:, :j + 1] @ (Q[:, :j + 1].T @ w)
        alpha.append(a)
        b = float(np.linalg.norm(w))
        beta_next = b
        if j == steps - 1 or b <= 1e-12 * max(abs(a), 1e-300):
            Q = Q[:, :j + 1]
            break
        beta.append(b)
        q_prev, q, b_prev = q, w / b, b
    return np.array(alpha), np.array(beta), Q, beta_next


def _tridiag(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    return np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)


def ritz_pairs(alpha, beta, Q, beta_next) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ritz values (ascending), Ritz vectors ``Q S`` and residual norms
    ``||A y - theta y|| = |beta_next * S[-1, j]|``."""
    theta, S = np.linalg.eigh(_tridiag(alpha, beta))
    return theta, Q @ S, np.abs(beta_next * S[-1, :])


def _quadrature(alpha, beta, k: int, fn) -> float:
    theta, S = np.linalg.eigh(_tridiag(alpha[:k], beta[:k - 1]))
    if theta[0] <= 0:
        raise CurvatureError(f"the matrix is not positive definite (a Ritz value is "
                             f"{theta[0]:.3g}); increase the damping")
    return float(np.sum(S[0, :] ** 2 * fn(theta)))


def slq_logdet(matvec: Callable[[np.ndarray], np.ndarray], d: int, probes: int = 4,
               steps: int = 24, seed: int = 0) -> dict:
    """``log det M`` of a symmetric positive definite ``M`` (given by ``matvec``) by
    stochastic Lanczos quadrature: Rademacher probes ``z`` (``|z|^2 = d``), each
    ``z^T log(M) z ~= d * sum_j S[0, j]^2 log theta_j`` from ``steps`` Lanczos steps.

    Returns ``estimate``, ``stderr`` (standard error across probes; NaN for one probe),
    ``values`` (per probe), ``quadrature_change`` (|estimate with steps - with steps//2|,
    a gauge of the quadrature's bias), ``probes``, ``steps``.

    Error: the Monte-Carlo part is ``stderr``; the quadrature bias decays like
    ``exp(-c * steps / sqrt(kappa))`` (Ubaru, Chen & Saad 2017), so it is small for a
    damped Hessian (kappa <= 1/damping_rtol) but *not* for a nearly singular matrix:
    there ``quadrature_change`` itself is unreliable (the test found a 190-nat error on
    a C with kappa ~ 1e15 while the gauge said 25) -- damp or project such a matrix
    first, or use ``steps`` close to its dimension.
    """
    rng = np.random.default_rng(seed)
    values, halves = [], []
    for _ in range(int(probes)):
        z = rng.choice([-1.0, 1.0], size=d)
        alpha, beta, _, _ = lanczos(matvec, z, steps)
        k = len(alpha)
        values.append(d * _quadrature(alpha, beta, k, np.log))
        halves.append(d * _quadrature(alpha, beta, max(1, k // 2), np.log))
    values = np.array(values)
    est = float(values.mean())
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return {"estimate": est, "stderr": se, "values": values.tolist(),
            "quadrature_change": float(abs(est - np.mean(halves))),
            "probes": int(probes), "steps": int(steps)}


def conjugate_gradient(matvec: Callable[[np.ndarray], np.ndarray], b: np.ndarray,
                       tol: float = 1e-3, maxiter: int = 200) -> tuple[np.ndarray, dict]:
    """Solve ``M x = b`` (M symmetric positive definite) by CG from x = 0; stops when
    ``||r|| <= tol ||b||``. ``info``: iterations, relative residual, converged, and
    ``indefinite`` when a direction with ``p^T M p <= 0`` was met (then it stops)."""
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rr = float(r @ r)
    bnorm = math.sqrt(float(b @ b)) or 1.0
    info = {"iterations": 0, "converged": False, "indefinite": False}
    for it in range(int(maxiter)):
        if math.sqrt(rr) <= tol * bnorm:
            info["converged"] = True
            break
        Mp = matvec(p)
        pMp = float(p @ Mp)
        if pMp <= 0:
            info["indefinite"] = True
            break
        a = rr / pMp
        x += a * p
        r -= a * Mp
        rr_new = float(r @ r)
        p = r + (rr_new / rr) * p
        rr = rr_new
        info["iterations"] = it + 1
    else:
        info["converged"] = math.sqrt(rr) <= tol * bnorm
    info["relative_residual"] = math.sqrt(rr) / bnorm
    return x, info


def trace_CAinv_cg(obj: Objective, a_matvec: Callable[[np.ndarray], np.ndarray],
                   gbar: np.ndarray, probes: int = 3, tol: float = 1e-3, maxiter: int = 150,
                   seed: int = 0) -> dict:
    """``tr(C M^-1)`` for ``M`` given by ``a_matvec`` (the damped A), with ``C`` the
    per-example gradient covariance of ``obj``'s examples: ``z = (G^T xi - (sum xi) g)
    / sqrt(n)`` with Rademacher ``xi`` has ``E[z z^T] = C``, so the mean of
    ``z^T M^-1 z`` (CG) over probes estimates the trace; ``stderr`` across probes."""
    rng = np.random.default_rng(seed)
    values, infos = [], []
    for _ in range(int(probes)):
        xi = rng.choice([-1.0, 1.0], size=obj.n)
        z = (obj.vjp_examples(xi) - xi.sum() * gbar) / math.sqrt(obj.n)
        x, info = conjugate_gradient(a_matvec, z, tol=tol, maxiter=maxiter)
        values.append(float(z @ x))
        infos.append(info)
    values = np.array(values)
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return {"estimate": float(values.mean()), "stderr": se, "values": values.tolist(),
            "probes": int(probes), "cg": infos,
            "converged": all(i["converged"] for i in infos)}


# ---------------------------------------------------------------- estimates

@dataclass
class CurvatureEstimate:
    """A and C (treated: positive definite, possibly projected) and how they were made."""

    params: str
    estimator: str
    d: int
    n_examples: int
    A: np.ndarray
    C: np.ndarray
    info: dict = field(default_factory=dict)
    #: (eigenvalues of A, C in A's eigenbasis) before the projection (exact path only)
    eig: tuple | None = field(default=None, repr=False)

    @property
    def d_eff(self) -> int:
        return int(self.A.shape[0])


def _subset(n: int, m: int | None, seed: int) -> np.ndarray:
    if m is None or m >= n:
        return np.arange(n)
    if m < 2:
        raise CurvatureError(f"max_examples must be at least 2 (a covariance), got {m}")
    return np.sort(np.random.default_rng(seed).choice(n, size=int(m), replace=False))


def estimate_curvature(model, x: np.ndarray, y: np.ndarray,
                       params: str | Sequence[str] | ParameterSelection = "classifier",
                       config: CurvatureConfig = CurvatureConfig(),
                       objective: Objective | None = None) -> CurvatureEstimate:
    """A and C at the model's current weights on ``(x, y)`` (already normalized), with
    the exact estimator when ``d <= config.exact_limit``, else the matrix-free one.
    ``objective`` (built for the same model/selection/data) is reused when given."""
    started = time.perf_counter()
    sel = params if isinstance(params, ParameterSelection) else select_parameters(model, params)
    if objective is None:
        objective = Objective(model, sel, x, y, config.chunk, config.pfor_rows)
    else:
        objective.refresh()
    obj = objective
    base = {"params": sel.label, "selection": sel.describe(), "d": sel.d,
            "variables": list(sel.paths), "n_examples": obj.n,
            "path": "head features (float64)" if obj.mode == "head" else
                    f"whole network ({obj.dtype.name}), BN inference mode",
            "data": "training set, normalized, no augmentation"}
    rtol = config.project_rtol
    if rtol is None:
        rtol = AUTO_RTOL["float64" if obj.dtype.name == "float64" else "float32"]
    if sel.d <= config.exact_limit:
        H, asym = obj.hessian()
        G = obj.per_example_gradients()
        C = gradient_covariance(G)
        loss, gbar = obj.loss_and_gradient()
        A_t, C_t, info = treat_dense(H, C, config.treatment, rtol, config.damping_rtol)
        eig = info.pop("_eig")
        info.update(base)
        info.update({"estimator": "exact-dense", "hessian_asymmetry": asym,
                     "train_loss": loss, "gradient_norm": float(np.linalg.norm(gbar)),
                     "per_example_gradient_mean_check": float(np.linalg.norm(G.mean(0) - gbar)),
                     "error": "round-off only (" + ("float64 head" if obj.mode == "head" else
                                                    "float32 network") + ")"})
        estimator = "exact-dense"
    else:
        A_t, C_t, info = _matrix_free(obj, config, rtol)
        info.update(base)
        estimator = "lanczos-subspace"
        eig = None
    info["seconds"] = time.perf_counter() - started
    return CurvatureEstimate(params=sel.label, estimator=estimator, d=sel.d,
                             n_examples=obj.n, A=A_t, C=C_t, info=info,
                             eig=eig if config.treatment == "project" else None)


def _matrix_free(obj: Objective, config: CurvatureConfig, rtol: float
                 ) -> tuple[np.ndarray, np.ndarray, dict]:
    rng = np.random.default_rng(config.seed)
    d = obj.d
    loss, gbar = obj.loss_and_gradient()
    t0 = time.perf_counter()
    alpha, beta, Q, bnext = lanczos(obj.hvp, rng.standard_normal(d), config.lanczos_steps)
    theta, Y, resid = ritz_pairs(alpha, beta, Q, bnext)
    t_lanczos = time.perf_counter() - t0
    lam_max = float(theta[-1])
    if not lam_max > 0:
        raise CurvatureError("Lanczos found no positive curvature; the bound needs A > 0")
    keep = theta > rtol * lam_max
    U = Y[:, keep]
    # C_U = U^T C U from the per-example directional derivatives G U (one JVP per column).
    t0 = time.perf_counter()
    P = np.stack([obj.jvp_examples(U[:, j]) for j in range(U.shape[1])], axis=1)
    C_U = gradient_covariance(P)
    t_c = time.perf_counter() - t0
    lam_all = theta.copy()
    A_t, C_t, proj = _project(theta[keep], C_U, rtol)
    info: dict[str, Any] = {
        "estimator": "lanczos-subspace", "treatment": "project (Krylov subspace)",
        "lanczos_steps": len(alpha), **proj,
        "n_discarded_A": int((~keep).sum()),
        "ritz_values": lam_all.tolist(),
        "ritz_residuals": resid.tolist(),
        "ritz_residual_max_kept": float(resid[keep].max()) if keep.any() else None,
        "ritz_residual_rel_top": float(resid[-1] / abs(theta[-1])),
        "A_eigenvalues": {"max": lam_max, "min_ritz": float(theta[0]),
                          "n_negative_ritz": int(np.sum(theta < 0))},
        "C_eigenvalues": _eig_stats(np.linalg.eigvalsh(C_U)),
        "train_loss": float(loss), "gradient_norm": float(np.linalg.norm(gbar)),
        "seconds_lanczos": t_lanczos, "seconds_C": t_c,
        "error": "A_U, C_U exact on the Krylov subspace (float32 HVP/JVP round-off); the "
                 "subspace approximates the top eigenspace (see ritz_residuals)",
        "note": "bound evaluated for SGD restricted to the kept Ritz vectors (then C's "
                "range within them); posterior = prior N(0, I) on the rest",
    }
    if config.whole_space:
        info["whole_space"] = _whole_space(obj, config, lam_max, float(theta[0]), gbar)
    return A_t, _clip_round_off(C_t), info


def _whole_space(obj: Objective, config: CurvatureConfig, lam_max: float, lam_min: float,
                 gbar: np.ndarray) -> dict:
    t0 = time.perf_counter()
    d, n = obj.d, obj.n
    damping = config.damping_rtol * lam_max
    reason = f"damping_rtol * lambda_max = {config.damping_rtol:g} * {lam_max:.4g}"
    if lam_min < 0 and 2 * abs(lam_min) > damping:
        damping = 2 * abs(lam_min)
        reason = f"2 |lambda_min| (Lanczos saw negative curvature {lam_min:.4g})"
    if config.hvp_examples is not None and config.hvp_examples < n:
        idx = _subset(n, config.hvp_examples, config.seed + 1)
        cached = getattr(obj, "_hvp_subset", None)
        if cached is not None and np.array_equal(cached[0], idx):
            a_obj = cached[1]
            a_obj.refresh()
        else:
            a_obj = Objective(obj.model, obj.selection, obj.x_input[idx], obj.y[idx],
                              obj.chunk, obj.pfor_rows)
            obj._hvp_subset = (idx, a_obj)
    else:
        idx, a_obj = None, obj

    def a_damped(v):
        return a_obj.hvp(v) + damping * v

    trace = trace_CAinv_cg(obj, a_damped, gbar, config.cg_probes, config.cg_tol,
                           config.cg_maxiter, config.seed + 2)
    logdet_A = slq_logdet(a_damped, d, config.slq_probes, config.slq_steps, config.seed + 3)
    out: dict[str, Any] = {
        "damping": damping, "damping_reason": reason,
        "hvp_examples": int(len(idx)) if idx is not None else n,
        "trace_CAinv": trace, "logdet_A_damped": logdet_A,
    }
    if n - 1 < d:
        out["logdet_C"] = -math.inf
        out["logdet_C_reason"] = (f"rank(C) <= n - 1 = {n - 1} < d = {d}: C is singular, so "
                                  "the commuting-form Sigma is singular and KL(Q||P) = inf "
                                  "(the whole-network bound is vacuous)")
    else:
        logdet_C = slq_logdet(lambda v: obj.c_matvec(v, gbar), d, config.slq_probes,
                              config.slq_steps, config.seed + 4)
        out["logdet_C"] = logdet_C["estimate"]
        out["logdet_C_slq"] = logdet_C
    out["seconds"] = time.perf_counter() - t0
    return out


def bound_terms(estimate: CurvatureEstimate, learning_rate: float, batch_size: float,
                n: float, delta: float = 0.05, prior_variance: float = 1.0) -> dict:
    """:func:`kerasgen.theory.evaluate_bounds` (as :func:`evaluate_bounds_eig`) on the
    treated A and C, plus (for the matrix-free estimator) the whole-space quantities;
    the prior is ``N(0, prior_variance * I)`` (the paper's: 1)."""
    report = evaluate_bounds_eig(estimate.A, estimate.C, learning_rate, batch_size, n,
                                 delta, prior_variance).as_dict()
    if estimate.eig is not None:
        report["sensitivity"] = projection_sensitivity(
            *estimate.eig, learning_rate, batch_size, n, delta)
    ws = estimate.info.get("whole_space")
    if ws:
        eta, bs, d = float(learning_rate), float(batch_size), estimate.d
        s2 = float(prior_variance)
        tr = ws["trace_CAinv"]["estimate"]
        whole = {"trace_CAinv": tr, "trace_CAinv_stderr": ws["trace_CAinv"]["stderr"],
                 "critical_ratio": tr / (2 * d * s2),
                 "assumption2": bool(d > tr * eta / (2 * bs * s2))}
        logdet_sigma = d * math.log(eta / (2 * bs)) + ws["logdet_C"] - ws["logdet_A_damped"]["estimate"]
        whole["logdet_sigma_commuting"] = logdet_sigma
        if math.isfinite(logdet_sigma):
            kl = 0.5 * (eta / (2 * bs) * tr / s2 - d + d * math.log(s2) - logdet_sigma)
            whole["kl_commuting"] = kl
            whole["theorem2"] = math.sqrt(max(kl + math.log(1 / delta) + math.log(n) + 2, 0.0)
                                          / (2 * n - 1))
        else:
            whole["kl_commuting"] = math.inf
            whole["theorem2"] = math.inf
        report["whole_space"] = whole
    return report


SENSITIVITY_RTOLS = (1e-12, 1e-9, 1e-6, 1e-3)


def projection_sensitivity(lam: np.ndarray, Ct: np.ndarray, learning_rate: float,
                           batch_size: float, n: float, delta: float,
                           rtols: Sequence[float] = SENSITIVITY_RTOLS) -> list[dict]:
    """How the projected bound depends on the threshold: for each ``rtol``, ``d_eff``,
    ``tr(C A^-1)``, Theorem 1 (eq. 16, Sigma from eq. 17 in A's eigenbasis) and Theorem 2
    (eq. 18; ``None`` where C is singular), by Cholesky factorizations only -- a record
    for the reader, cheaper than :func:`evaluate_bounds_eig` (which the row uses)."""
    eta, bs = float(learning_rate), float(batch_size)
    const = math.log(1.0 / delta) + math.log(n) + 2.0
    out = []
    for rtol in rtols:
        A_t, C_t, info = _project(np.asarray(lam, float), np.asarray(Ct, float), rtol)
        l = np.diag(A_t)
        d = len(l)
        rec: dict[str, Any] = {"rtol": rtol, "d_eff": d}
        if d == 0:
            out.append(rec)
            continue
        trace = float(np.sum(np.diag(C_t) / l))
        sigma = (eta / bs) * C_t / (l[:, None] + l[None, :])
        sign, logdet = np.linalg.slogdet(sigma)
        kl = 0.5 * (float(np.trace(sigma)) - d - logdet) if sign > 0 else math.inf
        sign_c, logdet_c = np.linalg.slogdet(C_t)
        t2 = None
        if sign_c > 0:
            num = (eta / (2 * bs) * trace + d * math.log(2 * bs / eta)
                   - (logdet_c - float(np.sum(np.log(l)))) - d + 2 * const)
            t2 = math.sqrt(max(num, 0.0) / (4 * n - 2))
        rec.update({"trace_CAinv": trace, "kl": kl,
                    "theorem1": math.sqrt((kl + const) / (2 * n - 1)) if math.isfinite(kl)
                    else math.inf, "theorem2": t2})
        out.append(rec)
    return out


# ---------------------------------------------------------------- the store

_ROW_COLUMNS = ("cell_id", "params", "estimator", "n_params", "n_examples", "delta",
                "trace_ca_inv", "logdet_sigma", "kl", "theorem1", "theorem1_discrete",
                "theorem2", "commutator", "assumption2", "critical_ratio", "report_json",
                "computed_at")


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def _existing(db, params: str) -> set[int]:
    from kerasgen.store import connect_readonly

    conn = connect_readonly(db)
    try:
        return {int(r[0]) for r in conn.execute("SELECT cell_id FROM bounds WHERE params = ?",
                                                (params,))}
    except Exception:  # noqa: BLE001 - a store without the bounds table yet
        return set()
    finally:
        conn.close()


def compute_bounds_for_store(db, study: str | None = None, cells: Sequence[int] | None = None,
                             params: str = "classifier", delta: float = 0.05,
                             data_dir: str = "data", checkpoint_dir: str | None = None,
                             max_examples: int | None = None,
                             recompute: bool = False) -> list[dict]:
    """Estimate A and C for the finished cells of a store and write their bound terms
    into the ``bounds`` table (one row per cell and ``params``); prints a line per cell.

    Cells: every ``done`` cell of ``study`` (or of all studies), or exactly ``cells``.
    Diverged cells are skipped with the reason printed; an unknown id, a requested cell
    that is not finished, or a missing final-weights file raise :class:`CurvatureError`
    (for the default selection a ``done`` cell without weights is skipped, with the
    reason printed). Cells whose row exists are skipped unless ``recompute``.
    Returns the rows written (dicts with the ``bounds`` columns plus ``report``).
    """
    from kerasgen.store import Store, load_results

    db = Path(db)
    if not db.exists():
        raise CurvatureError(f"{db} does not exist; train a study first (kerasgen run)")
    if max_examples is not None and max_examples < 2:
        raise CurvatureError(f"max_examples must be at least 2, got {max_examples}")
    if not 0.0 < float(delta) < 1.0:
        raise CurvatureError(f"delta must lie in (0, 1) (the confidence parameter), got {delta}")
    with Store(db) as store:  # migrate (creates the bounds table on an older store)
        uids = dict(store.conn.execute("SELECT name, uid FROM studies").fetchall())
    frame = load_results(db, study=study)
    if frame.empty:
        raise CurvatureError(f"{db} holds no cells" + (f" of study {study!r}" if study else ""))
    label = params if isinstance(params, str) else ",".join(params)
    explicit = cells is not None
    if explicit:
        wanted = [int(c) for c in cells]
        unknown = sorted(set(wanted) - set(frame["cell_id"].astype(int)))
        if unknown:
            raise CurvatureError(f"unknown cell id(s) {unknown} in {db}"
                                 + (f" (study {study!r})" if study else ""))
        frame = frame[frame["cell_id"].isin(wanted)]
        bad = frame[~frame["status"].isin(["done", "diverged"])]
        if len(bad):
            listed = ", ".join(f"{int(r.cell_id)} ({r.status})" for r in bad.itertuples())
            raise CurvatureError(f"cell(s) not finished: {listed}; only done cells have "
                                 f"final weights (run `kerasgen run` to finish them)")
    selected = []
    for row in frame.itertuples():
        if row.status == "diverged":
            print(f"cell {row.cell_id} {row.model} bs={row.batch_size} lr={row.learning_rate:g}: "
                  f"skipped (diverged at epoch {row.diverged_epoch}: no minimum to take A and C at)")
        elif row.status == "done":
            selected.append(row)
    done_already = set() if recompute else _existing(db, label)
    todo = []
    for row in selected:
        if row.cell_id in done_already:
            print(f"cell {row.cell_id} {row.model} bs={row.batch_size} lr={row.learning_rate:g}: "
                  f"bounds ({label}) already in the store; skipped (--recompute to redo)")
        else:
            todo.append(row)
    if not todo:
        return []

    from kerasgen.checkpoints import cell_weights_path, study_directory
    from kerasgen.options import RunOptions
    from kerasgen.train import checkpoint_root

    options = RunOptions(data_dir=data_dir, checkpoint_dir=checkpoint_dir)
    root = checkpoint_root(db, options)
    dirs = {name: study_directory(root, name, uid) for name, uid in uids.items()}
    runnable = []
    for row in todo:
        path = cell_weights_path(dirs[row.study], row.cell_id)
        if path.exists():
            runnable.append(row)
        elif explicit:
            raise CurvatureError(f"no final weights for cell {row.cell_id} at {path}; "
                                 f"pass --checkpoint-dir if the study was run with one")
        else:
            print(f"cell {row.cell_id} {row.model} bs={row.batch_size} lr={row.learning_rate:g}: "
                  f"skipped (no final weights at {path})")
    if not runnable:
        return []
    return _compute_rows(db, runnable, params, label, delta, options, dirs, max_examples)


def _compute_rows(db: Path, rows, params, label: str, delta: float, options, dirs: dict,
                  max_examples: int | None) -> list[dict]:
    from kerasgen import runtime

    runtime.quiet_tensorflow()
    config = CurvatureConfig()
    with _single_threaded_blas():
        return _compute_rows_inner(db, rows, params, label, delta, options, dirs,
                                   max_examples, config)


def _single_threaded_blas():
    """numpy's OpenBLAS, multi-threaded next to TensorFlow's thread pools, made
    ``eigvalsh`` of a 1161 x 1161 matrix 20x slower (4.5 s vs 0.2 s) on 2 cores."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _compute_rows_inner(db, rows, params, label, delta, options, dirs, max_examples, config):
    from kerasgen.checkpoints import load_cell_weights
    from kerasgen.models import build_model
    from kerasgen.store import Store, utc_now
    from kerasgen.train import prepare_dataset

    written: list[dict] = []
    groups: dict[tuple, list] = {}
    for row in rows:
        groups.setdefault((row.study, row.model, row.dataset), []).append(row)
    with Store(db) as store:
        for (study_name, model_name, dataset), members in groups.items():
            # Read through the open connection: a second, read-only one next to this
            # writer once failed with "disk I/O error" (WAL index) mid-run.
            study_row = store.study(study_name) or {}
            spec = json.loads(study_row.get("spec_json") or "{}")
            dtype = spec.get("training", {}).get("dtype", "float32")
            ds = prepare_dataset(dataset, options, dtype)
            idx = _subset(ds.train_size, max_examples, config.seed)
            x = ds.normalize(ds.x_train[idx])
            y = ds.y_train[idx]
            model = build_model(model_name, num_classes=ds.num_classes, input_shape=ds.input_shape)
            selection = select_parameters(model, params)
            objective = None
            for row in members:
                started = time.perf_counter()
                model.set_weights(load_cell_weights(dirs[study_name], row.cell_id))
                if objective is None:
                    objective = Objective(model, selection, x, y, config.chunk, config.pfor_rows)
                est = estimate_curvature(model, x, y, selection, config, objective=objective)
                report = bound_terms(est, float(row.learning_rate), float(row.batch_size),
                                     ds.train_size, delta)
                seconds = time.perf_counter() - started
                runner_loss = row.final_train_loss
                loss = est.info.get("train_loss")
                near_min = None
                if loss is not None and runner_loss is not None and math.isfinite(runner_loss):
                    near_min = bool(loss <= max(2 * runner_loss, runner_loss + 0.05))
                details = {"curvature": est.info, "bounds": report, "seconds": seconds,
                           "n_train": ds.train_size, "max_examples": max_examples,
                           "runner_final_train_loss": runner_loss, "near_minimum": near_min,
                           "config": asdict(config)}
                values = {
                    "cell_id": int(row.cell_id), "params": label, "estimator": est.estimator,
                    "n_params": est.d, "n_examples": est.n_examples, "delta": float(delta),
                    "trace_ca_inv": report["trace_CAinv"], "logdet_sigma": report["logdet_sigma"],
                    "kl": report["kl"], "theorem1": report["theorem1"],
                    "theorem1_discrete": report["theorem1_discrete"],
                    "theorem2": report["theorem2"], "commutator": report["commutator_norm"],
                    "assumption2": int(bool(report["assumption2"])),
                    "critical_ratio": report["critical_ratio"],
                    "report_json": json.dumps(_json_safe(details), sort_keys=True),
                    "computed_at": utc_now(),
                }
                with store.transaction() as conn:
                    conn.execute(
                        f"INSERT OR REPLACE INTO bounds ({', '.join(_ROW_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(_ROW_COLUMNS))})",
                        [values[c] for c in _ROW_COLUMNS])
                written.append({**values, "report": details})
                t2 = report["theorem2"]
                print(f"cell {row.cell_id} {model_name} bs={row.batch_size} "
                      f"lr={row.learning_rate:g}: d={est.d} {label} {est.estimator} "
                      f"({est.info.get('treatment')}: d_eff={est.d_eff}), "
                      f"theorem1={report['theorem1']:.4g}, "
                      f"theorem2={'undefined' if t2 is None else f'{t2:.4g}'}, "
                      f"tr(CA^-1)={report['trace_CAinv']:.4g}, "
                      f"assumption2={'yes' if report['assumption2'] else 'no'} "
                      f"[{seconds:.1f} s]", flush=True)
                if near_min is False:
                    print(f"  warning: cell {row.cell_id} is not at a minimum in inference mode "
                          f"(mean training loss {loss:.3g} with batch norm's moving statistics "
                          f"vs {runner_loss:.3g} recorded in training); Section 3 assumes one",
                          flush=True)
    return written
