"""PAC-Bayes bounds of He, Liu & Tao (NeurIPS 2019), Section 3, in numpy/scipy.

What is modelled
----------------
Near a minimum the risk is quadratic, ``R(theta) = 1/2 theta^T A theta`` (eq. 14),
with ``A`` the Hessian (d x d, symmetric positive definite).  Per-example gradients
are Gaussian with a *constant* covariance ``C`` (eq. 11), so a mini-batch gradient
has covariance ``C/|S|`` (eq. 12) and SGD with learning rate ``eta`` is

    theta_{t+1} = (I - eta A) theta_t + eta xi_t,   xi_t ~ N(0, C/|S|)      (eq. 13)

The paper reads eq. (13) as an Ornstein-Uhlenbeck process whose stationary law is
``Q = N(0, Sigma)`` (eq. 15) with the continuous-time Lyapunov equation

    Sigma A + A Sigma = (eta/|S|) C                                         (eq. 17)

The discrete chain itself has the exact stationary covariance

    Sigma = (I - eta A) Sigma (I - eta A)^T + (eta^2/|S|) C,

i.e. ``A Sigma + Sigma A - eta A Sigma A = (eta/|S|) C``, which differs from eq. (17)
by O(eta) and exists only for ``eta < 2/lambda_max(A)``.  Both are available through
:func:`stationary_covariance`; :func:`simulate_sgd` checks them by Monte Carlo.

The bounds
----------
With prior ``P = N(0, I)`` and posterior ``Q = N(0, Sigma)``, McAllester's PAC-Bayes
bound (McAllester 1999, as used by the paper) says that with probability >= 1-delta

    R(Q) <= R_hat(Q) + sqrt( (KL(Q||P) + log(1/delta) + log N + 2) / (2N - 1) ),
    KL(Q||P) = 1/2 (tr Sigma - d - log det Sigma).          (:func:`mcallester_bound`)

*Theorem 1 (eq. 16) is exactly this bound* -- no discrepancy.  Algebra: take the trace
of eq. (17) multiplied on the right by ``A^{-1}``: ``tr Sigma + tr(A Sigma A^{-1}) =
(eta/|S|) tr(C A^{-1})`` and ``tr(A Sigma A^{-1}) = tr Sigma``, hence

    tr Sigma = (eta / (2|S|)) tr(C A^{-1}),
    4 KL = (eta/|S|) tr(C A^{-1}) - 2 log det Sigma - 2d,

so the printed numerator of eq. (16) is ``4 (KL + log(1/delta) + log N + 2)`` and its
denominator ``8N - 4 = 4 (2N - 1)``.  :func:`theorem1_bound` therefore computes
through :func:`kl_divergence`; the tests evaluate the printed formula literally and
check equality.  With ``discrete=True`` the same McAllester bound is evaluated at the
discrete-SGD covariance; then the trace term is ``2 tr Sigma_discrete`` which is *not*
``(eta/|S|) tr(C A^{-1})`` (that identity holds for eq. 17 only), so the printed
formula is not used literally in that case.

*Theorem 2 (eq. 18)* replaces ``log det Sigma`` by ``log det((eta/(2|S|)) C A^{-1})``,
which is exact when ``Sigma = (eta/(2|S|)) C A^{-1}``, i.e. when A and C commute
(then eq. 18 == eq. 16).  In general eq. 18 >= eq. 16, with equality iff ``AC = CA``
(C positive definite).  Proof: write ``Sigma^{-1/2}(A Sigma + Sigma A)Sigma^{-1/2} =
B + B^T`` with ``B = Sigma^{-1/2} A Sigma^{1/2}`` (similar to A).  Its symmetric part
``H = (B + B^T)/2 = (eta/(2|S|)) Sigma^{-1/2} C Sigma^{-1/2}`` is positive definite,
and the Ostrowski-Taussky inequality ``det H <= |det B|`` (equality iff B is
symmetric, i.e. iff A Sigma = Sigma A, i.e. iff AC = CA) gives
``(eta/(2|S|))^d det C / det Sigma <= det A``, i.e. ``log det Sigma >=
log det((eta/(2|S|)) C A^{-1})``.  So eq. (18) is a valid (looser) bound even without
commutation.  The paper's Assumption 1 ("A and Sigma are symmetric") is vacuous as
stated -- both are always symmetric; what the proof uses is that ``Sigma A`` is
symmetric, which for symmetric matrices means that they *commute*
(see :func:`commutator_norm`).

Corollary 1 / Assumption 2 (eq. 19): both bounds depend on eta and |S| only through
``r = |S|/eta``; they decrease in r below ``r* = tr(C A^{-1})/(2d)`` and increase above
it, and Assumption 2 (``d > tr(C A^{-1}) eta/(2|S|)``) is exactly ``r > r*``.

The prior's scale. The paper fixes ``P = N(0, I)``. Every function here takes
``prior_variance`` (``s^2``, default 1) for ``P = N(0, s^2 I)``: then
``KL = 1/2 (tr Sigma / s^2 - d + d log s^2 - log det Sigma)``, Assumption 2 reads
``d > tr(C A^{-1}) eta / (2 |S| s^2)`` and ``r* = tr(C A^{-1}) / (2 d s^2)``. So whether
Assumption 2 holds, and where the bound turns from decreasing to increasing in |S|/eta,
depend on a choice the data do not make: the prior's scale. They also depend on the
parameterization: rescaling a layer's weights by c (and the next by 1/c, which a ReLU
network does not notice) changes A, C and tr(C A^{-1}) of the same function, so r* of a
network is a statement about its coordinates as much as about its predictions.

Caveats
-------
* Q is the *stationary* law of SGD around one minimum: it presumes SGD has run long
  enough to mix, with constant eta and |S|; the bound is on the Gibbs (randomised)
  classifier, not the single network that training returns.
* The loss is exactly quadratic (eq. 14) with A positive definite (flat directions
  make ``A^{-1}`` undefined); C is constant in theta and the noise is Gaussian (CLT).
* The continuous OU covariance (eq. 17) is an O(eta) approximation of discrete SGD.
* The prior N(0, I) is centred at the minimum (the paper translates the minimum to
  0), which is itself data-dependent; McAllester's bound assumes a loss in [0, 1].
* Eq. (18) needs ``log det C``: it is undefined (-inf) for singular C, while eq. (16)
  still applies (it may be +inf, i.e. vacuous, if Sigma itself is singular).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import scipy.linalg

__all__ = [
    "TheoryError",
    "BoundReport",
    "stationary_covariance",
    "kl_divergence",
    "mcallester_bound",
    "theorem1_bound",
    "theorem2_bound",
    "commutator_norm",
    "assumption2_holds",
    "critical_ratio",
    "evaluate_bounds",
    "simulate_sgd",
]

#: Relative tolerance for asymmetry: ``max|M - M^T| <= SYMMETRY_RTOL * max|M|``.
SYMMETRY_RTOL = 1e-8
#: C may have eigenvalues down to ``-PSD_RTOL * lambda_max(C)`` (round-off).
PSD_RTOL = 1e-10


class TheoryError(ValueError):
    """Invalid input to a bound or solver of :mod:`kerasgen.theory`."""


# --------------------------------------------------------------------------- checks


def _as_square(name: str, M: Any) -> np.ndarray:
    arr = np.asarray(M, dtype=float)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise TheoryError(
            f"{name} must be a non-empty square 2-D matrix, got shape {arr.shape}; "
            f"pass a d x d array (use [[a]] for d = 1)"
        )
    if not np.all(np.isfinite(arr)):
        raise TheoryError(f"{name} contains NaN or inf entries; pass a finite matrix")
    scale = float(np.max(np.abs(arr)))
    asym = float(np.max(np.abs(arr - arr.T)))
    if asym > SYMMETRY_RTOL * max(scale, np.finfo(float).tiny):
        raise TheoryError(
            f"{name} is not symmetric (max |{name} - {name}^T| = {asym:.3g}, "
            f"max |{name}| = {scale:.3g}); symmetrize it, e.g. ({name} + {name}.T) / 2"
        )
    return (arr + arr.T) / 2.0


def _check_A(A: Any) -> np.ndarray:
    A = _as_square("A", A)
    lam = np.linalg.eigvalsh(A)
    if lam[0] <= 0.0:
        raise TheoryError(
            f"A (the Hessian) must be symmetric positive definite, but its smallest "
            f"eigenvalue is {lam[0]:.6g}; the bounds need A^-1 -- restrict to the "
            f"non-flat subspace or add a small ridge (A + eps I)"
        )
    return A


def _check_C(C: Any, d: int) -> np.ndarray:
    C = _as_square("C", C)
    if C.shape != (d, d):
        raise TheoryError(
            f"C has shape {C.shape} but A has shape {(d, d)}; A and C must be d x d "
            f"matrices of the same size"
        )
    lam = np.linalg.eigvalsh(C)
    if lam[0] < -PSD_RTOL * max(abs(lam[-1]), np.finfo(float).tiny):
        raise TheoryError(
            f"C (gradient covariance) must be symmetric positive semi-definite, but "
            f"its smallest eigenvalue is {lam[0]:.6g} (largest {lam[-1]:.6g}); "
            f"pass a covariance matrix (e.g. project negative eigenvalues to 0)"
        )
    return C


def _check_AC(A: Any, C: Any) -> tuple[np.ndarray, np.ndarray]:
    A = _check_A(A)
    return A, _check_C(C, A.shape[0])


def _check_positive(name: str, value: Any, minimum: float, strict: bool, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TheoryError(f"{name} must be a real number, got {value!r}; {hint}")
    v = float(value)
    bad = (not math.isfinite(v)) or (v <= minimum if strict else v < minimum)
    if bad:
        op = ">" if strict else ">="
        raise TheoryError(f"{name} must be finite and {op} {minimum:g}, got {value!r}; {hint}")
    return v


def _check_lr(learning_rate: Any) -> float:
    return _check_positive("learning_rate", learning_rate, 0.0, True, "pass eta > 0")


def _check_bs(batch_size: Any) -> float:
    return _check_positive("batch_size", batch_size, 1.0, False, "pass |S| >= 1")


def _check_n(n: Any) -> float:
    return _check_positive("n", n, 1.0, False, "N is the training-set size, pass N >= 1")


def _check_delta(delta: Any) -> float:
    if isinstance(delta, bool) or not isinstance(delta, Real) or not (0.0 < float(delta) < 1.0):
        raise TheoryError(
            f"delta must lie in the open interval (0, 1), got {delta!r}; "
            f"it is the confidence parameter (e.g. 0.05)"
        )
    return float(delta)


def _check_prior_variance(prior_variance: Any) -> float:
    return _check_positive("prior_variance", prior_variance, 0.0, True,
                           "it is the variance s^2 of the prior N(0, s^2 I); the paper's is 1")


def _trace_CAinv(A: np.ndarray, C: np.ndarray) -> float:
    """tr(C A^{-1}) = tr(A^{-1} C) via a Cholesky solve."""
    return float(np.trace(scipy.linalg.cho_solve(scipy.linalg.cho_factor(A), C)))


def _logdet_psd(M: np.ndarray) -> float:
    """log det of a symmetric PSD matrix; -inf if numerically singular."""
    lam = np.linalg.eigvalsh(M)
    tol = M.shape[0] * np.finfo(float).eps * max(abs(lam[-1]), np.finfo(float).tiny)
    if lam[0] <= tol:
        return -math.inf
    sign, logdet = np.linalg.slogdet(M)
    if sign <= 0:
        return -math.inf
    return float(logdet)


def _discrete_limit(A: np.ndarray) -> float:
    return 2.0 / float(np.linalg.eigvalsh(A)[-1])


# ------------------------------------------------------------------------ Sigma / KL


def stationary_covariance(
    A: Any,
    C: Any,
    learning_rate: float,
    batch_size: float,
    discrete: bool = False,
) -> np.ndarray:
    """Stationary covariance Sigma of SGD on ``1/2 theta^T A theta``.

    ``discrete=False`` (the paper, eq. 17): the OU / Lyapunov solution of
    ``Sigma A + A Sigma = (eta/|S|) C``
    (solved in A's eigenbasis; ``scipy.linalg.solve_continuous_lyapunov`` gives the
    same, slower).

    ``discrete=True``: the exact stationary covariance of the SGD recursion (eq. 13)
    ``theta_{t+1} = (I - eta A) theta_t + noise``, ``noise ~ N(0, (eta^2/|S|) C)``:
    ``Sigma = (I - eta A) Sigma (I - eta A)^T + (eta^2/|S|) C``
    (solved in A's eigenbasis, as ``scipy.linalg.solve_discrete_lyapunov`` would).
    Equivalent to
    ``A Sigma + Sigma A - eta A Sigma A = (eta/|S|) C``: eq. (17) plus an O(eta) term.
    Requires ``eta < 2/lambda_max(A)``; beyond that SGD diverges (no stationary law).

    Returns a symmetric d x d array.
    """
    A, C = _check_AC(A, C)
    eta = _check_lr(learning_rate)
    bs = _check_bs(batch_size)
    if discrete:
        limit = _discrete_limit(A)
        if eta >= limit:
            raise TheoryError(
                f"learning_rate eta = {eta:.6g} >= 2/lambda_max(A) = {limit:.6g}: discrete "
                f"SGD diverges along the sharpest direction and has no stationary "
                f"distribution; use eta < {limit:.6g} or discrete=False"
            )
    # A is symmetric positive definite, so both equations diagonalize in A's
    # eigenbasis (A = V diag(l) V^T, C~ = V^T C V): eq. 17 gives
    # Sigma~_ij = (eta/|S|) C~_ij / (l_i + l_j), the discrete one
    # Sigma~_ij = (eta^2/|S|) C~_ij / (1 - m_i m_j) with m = 1 - eta l. This equals
    # scipy's Bartels-Stewart solvers (the tests check the residuals) and takes well
    # under a second where they took ~12 s at d = 1161 on 2 cores.
    lam, V = np.linalg.eigh(A)
    Ct = V.T @ C @ V
    if discrete:
        m = 1.0 - eta * lam
        sigma_t = (eta * eta / bs) * Ct / (1.0 - m[:, None] * m[None, :])
    else:
        sigma_t = (eta / bs) * Ct / (lam[:, None] + lam[None, :])
    sigma = V @ sigma_t @ V.T
    return (sigma + sigma.T) / 2.0


def kl_divergence(sigma: Any, prior_variance: float = 1.0) -> float:
    """KL(N(0, Sigma) || N(0, s^2 I)) = 1/2 (tr Sigma / s^2 - d + d log s^2 - log det Sigma)
    with ``s^2 = prior_variance`` (the paper: 1).

    The KL term of McAllester's bound behind eq. (16).  ``log det`` uses
    ``numpy.linalg.slogdet``.  Returns ``math.inf`` when Sigma is (numerically)
    singular: a degenerate Gaussian is not absolutely continuous w.r.t. the prior.
    """
    s2 = _check_prior_variance(prior_variance)
    S = _as_square("sigma", sigma)
    lam = np.linalg.eigvalsh(S)
    if lam[0] < -PSD_RTOL * max(abs(lam[-1]), np.finfo(float).tiny):
        raise TheoryError(
            f"sigma must be a covariance (symmetric PSD), but its smallest eigenvalue "
            f"is {lam[0]:.6g}"
        )
    logdet = _logdet_psd(S)
    if logdet == -math.inf:
        return math.inf
    d = S.shape[0]
    return 0.5 * (float(np.trace(S)) / s2 - d + d * math.log(s2) - logdet)


def mcallester_bound(sigma: Any, n: float, delta: float, prior_variance: float = 1.0) -> float:
    """McAllester's PAC-Bayes gap for Q = N(0, Sigma), P = N(0, s^2 I):

    ``sqrt( (KL(Q||P) + log(1/delta) + log N + 2) / (2N - 1) )``.

    Eq. (16) is this expression with Sigma from eq. (17) and ``s^2 = 1``.  ``inf`` if KL
    is infinite.
    """
    n_ = _check_n(n)
    delta_ = _check_delta(delta)
    kl = kl_divergence(sigma, prior_variance)
    if math.isinf(kl):
        return math.inf
    return math.sqrt((kl + math.log(1.0 / delta_) + math.log(n_) + 2.0) / (2.0 * n_ - 1.0))


def theorem1_bound(
    A: Any,
    C: Any,
    learning_rate: float,
    batch_size: float,
    n: float,
    delta: float,
    discrete: bool = False,
    prior_variance: float = 1.0,
) -> float:
    """Square-root term of Theorem 1, eq. (16):

    ``sqrt( ((eta/|S|) tr(C A^-1) - 2 log det Sigma - 2d + 4 log(1/delta) + 4 log N + 8)
    / (8N - 4) )`` with Sigma from eq. (17).

    Computed as ``mcallester_bound(Sigma, n, delta)``, which is algebraically identical
    because ``tr Sigma = (eta/(2|S|)) tr(C A^-1)`` for the eq.-17 solution (see the
    module docstring).  With ``discrete=True`` Sigma is the exact discrete-SGD
    covariance and the same McAllester/KL form is used, i.e. the trace term is
    ``2 tr Sigma_discrete`` instead of ``(eta/|S|) tr(C A^-1)``.
    Returns ``inf`` (vacuous) if Sigma is singular. ``prior_variance``: ``s^2`` of the
    prior ``N(0, s^2 I)`` (the paper's eq. 16 is ``s^2 = 1``).
    """
    _check_n(n)
    _check_delta(delta)
    sigma = stationary_covariance(A, C, learning_rate, batch_size, discrete=discrete)
    return mcallester_bound(sigma, n, delta, prior_variance)


def theorem2_bound(
    A: Any,
    C: Any,
    learning_rate: float,
    batch_size: float,
    n: float,
    delta: float,
    prior_variance: float = 1.0,
) -> float:
    """Square-root term of Theorem 2, eq. (18), evaluated as printed:

    ``sqrt( ((eta/(2|S|)) tr(C A^-1) + d log(2|S|/eta) - log det(C A^-1) - d
    + 2 log(1/delta) + 2 log N + 4) / (4N - 2) )``.

    Equals eq. (16) when A and C commute; otherwise it is strictly larger
    (Ostrowski-Taussky, see the module docstring), hence still a valid bound.
    ``log det(C A^-1) = log det C - log det A`` requires C nonsingular; a singular C
    raises :class:`TheoryError` (Theorem 1 still applies). With a prior ``N(0, s^2 I)``
    (``prior_variance = s^2``; the paper: 1) the trace term is divided by ``s^2`` and
    ``d log s^2`` is added.
    """
    s2 = _check_prior_variance(prior_variance)
    A, C = _check_AC(A, C)
    eta = _check_lr(learning_rate)
    bs = _check_bs(batch_size)
    n_ = _check_n(n)
    delta_ = _check_delta(delta)
    d = A.shape[0]
    logdet_C = _logdet_psd(C)
    if logdet_C == -math.inf:
        lam_min = float(np.linalg.eigvalsh(C)[0])
        raise TheoryError(
            f"C is singular (smallest eigenvalue {lam_min:.6g}), so log det(C A^-1) = -inf "
            f"and Theorem 2 (eq. 18) is undefined; Theorem 1 (theorem1_bound, eq. 16) "
            f"still applies"
        )
    logdet_CAinv = logdet_C - _logdet_psd(A)
    num = (
        eta / (2.0 * bs) * _trace_CAinv(A, C) / s2
        + d * math.log(2.0 * bs / eta)
        + d * math.log(s2)
        - logdet_CAinv
        - d
        + 2.0 * math.log(1.0 / delta_)
        + 2.0 * math.log(n_)
        + 4.0
    )
    return math.sqrt(num / (4.0 * n_ - 2.0))


# ----------------------------------------------------------- assumptions, corollary


def commutator_norm(A: Any, C: Any) -> float:
    """Relative commutator ``||AC - CA||_F / (||A||_F ||C||_F)`` (0 iff they commute).

    The form of Assumption 1 that Theorem 2 actually needs.  The paper states it as
    "A and Sigma are symmetric", which always holds and is not enough: the proof uses
    that ``Sigma A`` is symmetric, i.e. that A and Sigma commute, which (via eq. 17)
    is equivalent to A and C commuting.  Returns 0 for C = 0.
    """
    A, C = _check_AC(A, C)
    denom = float(np.linalg.norm(A) * np.linalg.norm(C))
    if denom == 0.0:
        return 0.0
    return float(np.linalg.norm(A @ C - C @ A)) / denom


def assumption2_holds(A: Any, C: Any, learning_rate: float, batch_size: float,
                      prior_variance: float = 1.0) -> bool:
    """Assumption 2, eq. (19): ``d > tr(C A^-1) eta / (2|S| s^2)`` (the paper: ``s^2 = 1``).

    Equivalent to ``|S|/eta > critical_ratio(A, C, prior_variance)``: it depends on the
    prior's scale (see the module docstring).
    """
    s2 = _check_prior_variance(prior_variance)
    A, C = _check_AC(A, C)
    eta = _check_lr(learning_rate)
    bs = _check_bs(batch_size)
    return bool(A.shape[0] > _trace_CAinv(A, C) * eta / (2.0 * bs * s2))


def critical_ratio(A: Any, C: Any, prior_variance: float = 1.0) -> float:
    """``r* = tr(C A^-1) / (2 d s^2)``: the ratio ``r = |S|/eta`` minimising the bounds
    (the paper: ``s^2 = 1``; a wider prior moves it down).

    The eq.-18 numerator depends on r as ``tr(C A^-1)/(2r) + d log(2r) + const``, with
    derivative ``d/r - tr(C A^-1)/(2 r^2)``: negative for r < r*, zero at r*, positive
    above (Corollary 1 -- the bound grows with |S|/eta exactly when Assumption 2 holds).
    The eq.-16 bound has the same minimiser: ``Sigma(r) = Sigma_1 / r`` so
    ``2 KL = tr Sigma_1 / r + d log r - d - log det Sigma_1``, minimised at
    ``r = tr Sigma_1 / d = tr(C A^-1)/(2d)``.
    """
    s2 = _check_prior_variance(prior_variance)
    A, C = _check_AC(A, C)
    return _trace_CAinv(A, C) / (2.0 * A.shape[0] * s2)


# -------------------------------------------------------------------------- report


@dataclass(frozen=True)
class BoundReport:
    """Every term of Section 3 for one (A, C, eta, |S|, N, delta).

    ``*_discrete`` fields are ``None`` (with ``discrete_reason``) when
    ``eta >= 2/lambda_max(A)``; ``theorem2`` is ``None`` (with ``theorem2_reason``) when
    C is singular.  Infinite values (singular Sigma) are kept as ``float('inf')`` /
    ``-inf``.
    """

    d: int
    learning_rate: float
    batch_size: float
    n: float
    delta: float
    ratio: float
    trace_CAinv: float
    trace_sigma: float
    logdet_sigma: float
    logdet_sigma_discrete: float | None
    kl: float
    kl_discrete: float | None
    theorem1: float
    theorem1_discrete: float | None
    discrete_reason: str | None
    theorem2: float | None
    theorem2_reason: str | None
    commutator_norm: float
    assumption2: bool
    critical_ratio: float
    prior_variance: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        """Plain ``dict`` of builtin types (for JSON, a CLI table or a DB row)."""
        return dataclasses.asdict(self)


def evaluate_bounds(
    A: Any,
    C: Any,
    learning_rate: float,
    batch_size: float,
    n: float,
    delta: float = 0.05,
    prior_variance: float = 1.0,
) -> BoundReport:
    """Compute every quantity of Section 3 at once (see :class:`BoundReport`), with the
    prior ``N(0, prior_variance * I)`` (the paper: 1)."""
    s2 = _check_prior_variance(prior_variance)
    A, C = _check_AC(A, C)
    eta = _check_lr(learning_rate)
    bs = _check_bs(batch_size)
    n_ = _check_n(n)
    delta_ = _check_delta(delta)
    d = A.shape[0]

    sigma = stationary_covariance(A, C, eta, bs)
    kl = kl_divergence(sigma, s2)

    logdet_d: float | None = None
    kl_d: float | None = None
    t1_d: float | None = None
    discrete_reason: str | None = None
    try:
        sigma_d = stationary_covariance(A, C, eta, bs, discrete=True)
    except TheoryError as exc:
        discrete_reason = str(exc)
    else:
        logdet_d = _logdet_psd(sigma_d)
        kl_d = kl_divergence(sigma_d, s2)
        t1_d = mcallester_bound(sigma_d, n_, delta_, s2)

    t2: float | None = None
    t2_reason: str | None = None
    try:
        t2 = theorem2_bound(A, C, eta, bs, n_, delta_, s2)
    except TheoryError as exc:
        t2_reason = str(exc)

    return BoundReport(
        d=d,
        learning_rate=eta,
        batch_size=bs,
        n=n_,
        delta=delta_,
        ratio=bs / eta,
        trace_CAinv=_trace_CAinv(A, C),
        trace_sigma=float(np.trace(sigma)),
        logdet_sigma=_logdet_psd(sigma),
        logdet_sigma_discrete=logdet_d,
        kl=kl,
        kl_discrete=kl_d,
        theorem1=mcallester_bound(sigma, n_, delta_, s2),
        theorem1_discrete=t1_d,
        discrete_reason=discrete_reason,
        theorem2=t2,
        theorem2_reason=t2_reason,
        commutator_norm=commutator_norm(A, C),
        assumption2=assumption2_holds(A, C, eta, bs, s2),
        critical_ratio=critical_ratio(A, C, s2),
        prior_variance=s2,
    )


# ---------------------------------------------------------------------- simulation


def simulate_sgd(
    A: Any,
    C: Any,
    learning_rate: float,
    batch_size: float,
    steps: int,
    burn_in: int,
    seed: int | None,
    chains: int = 1000,
) -> np.ndarray:
    """Empirical stationary covariance of SGD on ``1/2 theta^T A theta`` (eq. 13).

    Runs ``chains`` independent chains from ``theta_0 = 0`` for ``steps`` iterations
    ``theta <- theta - eta (A theta + xi)``, ``xi ~ N(0, C/|S|)`` (the average of |S|
    per-example N(0, C) gradient noises, sampled directly), discards the first
    ``burn_in`` iterations and returns ``mean(theta theta^T)`` over the remaining
    ``chains * (steps - burn_in)`` states (the stationary mean is known to be 0).
    Compare with ``stationary_covariance(..., discrete=True)``.
    """
    A, C = _check_AC(A, C)
    eta = _check_lr(learning_rate)
    bs = _check_bs(batch_size)
    for name, v in (("steps", steps), ("burn_in", burn_in), ("chains", chains)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TheoryError(f"{name} must be an integer, got {v!r}")
    if chains < 1:
        raise TheoryError(f"chains must be >= 1, got {chains}")
    if burn_in < 0 or steps <= burn_in:
        raise TheoryError(
            f"need 0 <= burn_in < steps, got burn_in = {burn_in}, steps = {steps}; "
            f"steps counts all iterations, the first burn_in are discarded"
        )
    limit = _discrete_limit(A)
    if eta >= limit:
        raise TheoryError(
            f"learning_rate eta = {eta:.6g} >= 2/lambda_max(A) = {limit:.6g}: SGD diverges "
            f"and has no stationary covariance; use eta < {limit:.6g}"
        )
    d = A.shape[0]
    lam, V = np.linalg.eigh(C / bs)
    L = V * np.sqrt(np.clip(lam, 0.0, None))  # L L^T = C/|S|
    # theta (chains, d) row vectors: theta <- theta M^T - eta xi, M = I - eta A (symmetric).
    M = np.eye(d) - eta * A
    noise_map = -eta * L.T  # z @ noise_map has covariance eta^2 C/|S|
    rng = np.random.default_rng(seed)
    theta = np.zeros((chains, d))
    acc = np.zeros((d, d))
    for t in range(steps):
        theta = theta @ M + rng.standard_normal((chains, d)) @ noise_map
        if t >= burn_in:
            acc += theta.T @ theta
    acc /= chains * (steps - burn_in)
    return (acc + acc.T) / 2.0
