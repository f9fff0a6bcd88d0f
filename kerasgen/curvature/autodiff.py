"""A and C of a trained Keras network: the parameters they are taken over, the objective
(the mean training loss, its gradient, Hessian-vector products and per-example gradients
through the backend's autodiff), and the estimate, dense or matrix-free, with the bound
terms it implies."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from kerasgen.curvature.config import CurvatureConfig, CurvatureError
from kerasgen.curvature.linalg import (
    AUTO_RTOL,
    _clip_round_off,
    _eig_stats,
    _project,
    conjugate_gradient,
    evaluate_bounds_eig,
    gradient_covariance,
    lanczos,
    projection_sensitivity,
    ritz_pairs,
    slq_logdet,
    treat_dense,
)

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
        logdet_sigma = (d * math.log(eta / (2 * bs)) + ws["logdet_C"]
                        - ws["logdet_A_damped"]["estimate"])
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



__all__ = ["CurvatureEstimate", "Objective", "ParameterSelection", "bound_terms",
           "estimate_curvature", "select_parameters", "trace_CAinv_cg"]
