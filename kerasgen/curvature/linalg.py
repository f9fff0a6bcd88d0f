"""The linear algebra of the bound, in numpy alone: C from per-example gradients, the
treatment of A and C where A is not positive definite, the bound terms in A's eigenbasis,
and the Krylov tools of the matrix-free estimator (Lanczos, stochastic Lanczos quadrature,
conjugate gradients). No Keras: these work on arrays and matrix-vector products."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from kerasgen.curvature.config import CurvatureError


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
        lam_t = np.diag(A_t)
        d = len(lam_t)
        rec: dict[str, Any] = {"rtol": rtol, "d_eff": d}
        if d == 0:
            out.append(rec)
            continue
        trace = float(np.sum(np.diag(C_t) / lam_t))
        sigma = (eta / bs) * C_t / (lam_t[:, None] + lam_t[None, :])
        sign, logdet = np.linalg.slogdet(sigma)
        kl = 0.5 * (float(np.trace(sigma)) - d - logdet) if sign > 0 else math.inf
        sign_c, logdet_c = np.linalg.slogdet(C_t)
        t2 = None
        if sign_c > 0:
            num = (eta / (2 * bs) * trace + d * math.log(2 * bs / eta)
                   - (logdet_c - float(np.sum(np.log(lam_t)))) - d + 2 * const)
            t2 = math.sqrt(max(num, 0.0) / (4 * n - 2))
        rec.update({"trace_CAinv": trace, "kl": kl,
                    "theorem1": math.sqrt((kl + const) / (2 * n - 1)) if math.isfinite(kl)
                    else math.inf, "theorem2": t2})
        out.append(rec)
    return out



__all__ = ["AUTO_RTOL", "SENSITIVITY_RTOLS", "conjugate_gradient", "evaluate_bounds_eig",
           "gradient_covariance", "lanczos", "projection_sensitivity", "ritz_pairs",
           "slq_logdet", "treat_dense"]
