"""The numerical methods behind the measures, on numpy vectors and callables: power
iteration, Lanczos's top eigenvalue and Hutchinson's trace, projected gradient ascent in
a box and in an ellipsoid, the bisection for PAC-Bayes flatness, and the gradient noise
scale. No Keras: ``kerasgen.measures.network`` supplies the losses, gradients and
Hessian-vector products of a network; the tests supply quadratics with known answers.

Every function returns its value with what it did (iterations, whether it converged,
standard errors), which ``kerasgen measures`` stores beside the value.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from kerasgen.curvature.linalg import lanczos, ritz_pairs

Vector = np.ndarray
LossAndGradient = Callable[[Vector], tuple[float, Vector]]


# ---------------------------------------------------------------- spectra

def power_iteration(matvec: Callable[[Vector], Vector], rmatvec: Callable[[Vector], Vector],
                    shape: tuple[int, ...], iters: int = 100, tol: float = 1e-6,
                    seed: int = 0) -> tuple[float, dict]:
    """The largest singular value of a linear operator ``M`` (``matvec(x) = M x``,
    ``rmatvec(y) = M^T y``, ``x`` of ``shape``), by power iteration on ``M^T M`` from a
    seeded Gaussian start. Each estimate ``||M v||`` (``||v|| = 1``) is a lower bound that
    rises to ``sigma_max``; it stops when it changes by less than ``tol`` relative."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(shape)
    v /= np.linalg.norm(v)
    sigma, previous, converged, it = 0.0, 0.0, False, 0
    for it in range(1, int(iters) + 1):
        u = matvec(v)
        sigma = float(np.linalg.norm(u))
        if sigma == 0.0:
            return 0.0, {"iterations": it, "converged": True, "method": "power iteration"}
        w = rmatvec(u / sigma)
        norm = float(np.linalg.norm(w))
        if norm == 0.0:
            break
        v = w / norm
        if abs(sigma - previous) <= tol * sigma:
            converged = True
            break
        previous = sigma
    sigma = max(sigma, float(np.linalg.norm(matvec(v))))
    return sigma, {"iterations": it, "converged": converged, "method": "power iteration",
                   "tol": tol}


def top_eigenvalue(matvec: Callable[[Vector], Vector], dim: int, steps: int = 20,
                   seed: int = 0) -> tuple[float, dict]:
    """The largest eigenvalue of a symmetric operator by Lanczos with full
    reorthogonalization (:func:`kerasgen.curvature.lanczos`) from a seeded Gaussian start:
    the top Ritz value, with its residual ``||A y - theta y||`` (a bound on the distance
    to an eigenvalue)."""
    rng = np.random.default_rng(seed)
    alpha, beta, Q, beta_next = lanczos(matvec, rng.standard_normal(dim), steps)
    theta, _, residual = ritz_pairs(alpha, beta, Q, beta_next)
    return float(theta[-1]), {"method": "Lanczos", "steps": int(len(alpha)),
                              "residual": float(residual[-1]),
                              "lowest_ritz": float(theta[0])}


def hutchinson_trace(matvec: Callable[[Vector], Vector], dim: int, probes: int = 10,
                     seed: int = 0) -> tuple[float, dict]:
    """``tr(A)`` as the mean of ``z^T A z`` over Rademacher probes ``z`` (Hutchinson 1989),
    with the standard error across probes."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(int(probes)):
        z = rng.choice([-1.0, 1.0], size=dim)
        values.append(float(z @ matvec(z)))
    values_arr = np.asarray(values)
    stderr = (float(values_arr.std(ddof=1) / math.sqrt(len(values_arr)))
              if len(values_arr) > 1 else math.nan)
    return float(values_arr.mean()), {"method": "Hutchinson (Rademacher)",
                                      "probes": int(probes), "stderr": stderr}


# ---------------------------------------------------------------- worst-case perturbations

def box_ascent(loss_and_gradient: LossAndGradient, half_width: Vector, steps: int = 10,
               step_fraction: float = 2.5) -> dict:
    """``max L(delta)`` over the box ``|delta_i| <= half_width_i`` by projected gradient
    ascent in the infinity norm (signed steps of ``step_fraction * half_width / steps``,
    clipped to the box) from ``delta = 0``; the largest loss seen on the way is kept.

    ``loss_and_gradient(delta)`` is the loss at the perturbed weights and its gradient.
    Returns ``base`` (the loss at 0), ``max`` (the largest loss found), ``delta`` (where)
    and ``evaluations``."""
    half_width = np.asarray(half_width, float)
    delta = np.zeros_like(half_width)
    base, grad = loss_and_gradient(delta)
    best, best_delta = base, delta.copy()
    step = step_fraction * half_width / max(int(steps), 1)
    for _ in range(int(steps)):
        delta = np.clip(delta + step * np.sign(grad), -half_width, half_width)
        loss, grad = loss_and_gradient(delta)
        if loss > best:
            best, best_delta = loss, delta.copy()
    return {"base": float(base), "max": float(best), "delta": best_delta,
            "evaluations": int(steps) + 1}


def ellipsoid_ascent(loss_and_gradient: LossAndGradient, scale: Vector, rho: float,
                     steps: int = 10) -> dict:
    """``max L(delta)`` over ``||delta / scale||_2 <= rho`` (ASAM's region, Kwon et al.
    2021, with ``scale = |w| + eta``) by projected gradient ascent in the rescaled
    variable ``e = delta / scale``: a first step to the boundary along ``scale * grad``
    (ASAM's own ascent step), then steps of ``rho / 2`` along the rescaled gradient,
    projected back onto the ball; the largest loss seen is kept."""
    scale = np.asarray(scale, float)
    e = np.zeros_like(scale)
    base, grad = loss_and_gradient(e * scale)
    best, best_e = base, e.copy()
    for k in range(int(steps)):
        direction = scale * grad
        norm = float(np.linalg.norm(direction))
        if norm == 0.0:
            break
        e = e + (rho if k == 0 else rho / 2) * direction / norm
        length = float(np.linalg.norm(e))
        if length > rho:
            e *= rho / length
        loss, grad = loss_and_gradient(e * scale)
        if loss > best:
            best, best_e = loss, e.copy()
    return {"base": float(base), "max": float(best), "delta": best_e * scale,
            "evaluations": int(steps) + 1}


def largest_sigma(rise: Callable[[float], float], target: float, low: float = 1e-6,
                  high: float = 1.0, steps: int = 20, limit: float = 1e3) -> tuple[float, dict]:
    """The largest ``sigma`` with ``rise(sigma) <= target`` for a ``rise`` that grows with
    ``sigma`` (the expected loss increase under noise of scale sigma, with the noise's
    random numbers held fixed so it is a deterministic function): ``high`` is doubled
    until ``rise(high) > target`` (up to ``limit``), ``low`` halved until it is within,
    then ``steps`` bisections in log scale. Returns the lower end of the final bracket
    (a sigma that satisfies the constraint) and the bracket."""
    evaluations = 0

    def f(s: float) -> float:
        nonlocal evaluations
        evaluations += 1
        return float(rise(s))

    while f(high) <= target:
        if high >= limit:
            return high, {"bracket": [high, math.inf], "evaluations": evaluations,
                          "note": f"the rise stays within {target:g} up to sigma = {limit:g}"}
        low, high = high, high * 2.0
    while f(low) > target:
        if low < 1e-12:
            return 0.0, {"bracket": [0.0, low], "evaluations": evaluations,
                         "note": "the rise exceeds the target at every sigma tried"}
        low, high = low / 2.0, low
    for _ in range(int(steps)):
        mid = math.sqrt(low * high)
        if f(mid) <= target:
            low = mid
        else:
            high = mid
    return low, {"bracket": [low, high], "evaluations": evaluations}


def pacbayes_sigma(loss: Callable[[Vector], float], w: Vector, magnitude: bool = False,
                   target: float = 0.1, samples: int = 3, steps: int = 8,
                   epsilon: float = 1e-3, seed: int = 0) -> tuple[float, dict]:
    """The largest ``sigma`` whose Gaussian perturbation raises ``loss`` by at most
    ``target`` in expectation (Jiang et al. 2020, PAC-Bayes flatness): ``u = sigma z``
    (plain) or ``u = sqrt(sigma^2 w^2 + epsilon^2) z`` (magnitude-aware), ``z ~ N(0, I)``;
    the expectation is the mean over ``samples`` seeded draws of z, held fixed while
    :func:`largest_sigma` bisects (so the rise is a deterministic, increasing function
    of sigma for a loss with a minimum at ``w``)."""
    rng = np.random.default_rng(seed)
    w = np.asarray(w, float)
    base = float(loss(w))
    draws = [rng.standard_normal(w.shape) for _ in range(int(samples))]

    def rise(sigma: float) -> float:
        scale = np.sqrt(sigma ** 2 * w ** 2 + epsilon ** 2) if magnitude else sigma
        return float(np.mean([loss(w + scale * z) for z in draws])) - base

    low, high = (1e-3, 1e-1) if magnitude else (1e-4, 1e-2)
    sigma, info = largest_sigma(rise, target, low=low, high=high, steps=steps)
    return sigma, {"loss": base, "target_rise": target, "samples": int(samples),
                   "bisection_steps": int(steps),
                   "noise": "sqrt(sigma^2 w^2 + eps^2) z" if magnitude else "sigma z",
                   **({"epsilon": epsilon} if magnitude else {}), **info}


# ---------------------------------------------------------------- gradient noise

def gradient_noise(n: int, gradient_sum: Vector, squared_norm_sum: float) -> dict:
    """The gradient noise of a set of ``n`` examples from the sum of their gradients and
    the sum of their squared norms: ``g = sum g_i / n``, ``tr(C) = sum |g_i|^2 / n - |g|^2``
    (the covariance with 1/n, as :func:`kerasgen.curvature.gradient_covariance`), and the
    simple noise scale ``B_simple = tr(C) / |g|^2`` (McCandlish et al. 2018, eq. 2.8):
    the batch size at which the gradient's noise equals its signal."""
    mean = np.asarray(gradient_sum, float) / n
    grad_sq = float(mean @ mean)
    trace = max(float(squared_norm_sum) / n - grad_sq, 0.0)
    return {"n": int(n), "trace_C": trace, "gradient_norm_sq": grad_sq,
            "b_simple": trace / grad_sq if grad_sq > 0 else math.inf}


__all__ = ["box_ascent", "ellipsoid_ascent", "gradient_noise", "hutchinson_trace",
           "largest_sigma", "pacbayes_sigma", "power_iteration", "top_eigenvalue"]
