"""Tests of kerasgen.theory against independently derived values (He, Liu & Tao 2019, Sec. 3)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import scipy.optimize

from kerasgen import theory as T

SEEDS = [0, 1, 2, 3, 4, 5]


# ----------------------------------------------------------------------------- helpers


def random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def random_spd(d: int, rng: np.random.Generator, lo: float = 0.5, hi: float = 4.0) -> np.ndarray:
    Q = random_orthogonal(d, rng)
    return Q @ np.diag(rng.uniform(lo, hi, d)) @ Q.T


def commuting_pair(d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Simultaneously diagonalisable SPD A and C (same random eigenbasis)."""
    rng = np.random.default_rng(seed)
    Q = random_orthogonal(d, rng)
    A = Q @ np.diag(rng.uniform(0.5, 5.0, d)) @ Q.T
    C = Q @ np.diag(rng.uniform(0.1, 3.0, d)) @ Q.T
    return (A + A.T) / 2, (C + C.T) / 2


def noncommuting_pair(d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent random SPD A and C (generically non-commuting)."""
    rng = np.random.default_rng(1000 + seed)
    A = random_spd(d, rng, 0.5, 5.0)
    C = random_spd(d, rng, 0.1, 3.0)
    return (A + A.T) / 2, (C + C.T) / 2


def printed_eq16(A, C, eta, bs, n, delta) -> float:
    """Eq. (16) evaluated literally with Sigma from eq. (17)."""
    d = A.shape[0]
    sigma = T.stationary_covariance(A, C, eta, bs)
    tr = np.trace(C @ np.linalg.inv(A))
    num = (
        eta / bs * tr
        - 2 * math.log(np.linalg.det(sigma))
        - 2 * d
        + 4 * math.log(1 / delta)
        + 4 * math.log(n)
        + 8
    )
    return math.sqrt(num / (8 * n - 4))


def printed_eq18(A, C, eta, bs, n, delta) -> float:
    """Eq. (18) evaluated literally with explicit inverse and determinant."""
    d = A.shape[0]
    CAinv = C @ np.linalg.inv(A)
    num = (
        eta / (2 * bs) * np.trace(CAinv)
        + d * math.log(2 * bs / eta)
        - math.log(np.linalg.det(CAinv))
        - d
        + 2 * math.log(1 / delta)
        + 2 * math.log(n)
        + 4
    )
    return math.sqrt(num / (4 * n - 2))


# ------------------------------------------------------------------------ Sigma (eq. 17)


def test_continuous_sigma_matches_closed_form_for_diagonal_A_and_C():
    a = np.array([0.5, 1.0, 3.0])
    c = np.array([2.0, 0.3, 1.5])
    eta, bs = 0.1, 16
    sigma = T.stationary_covariance(np.diag(a), np.diag(c), eta, bs)
    np.testing.assert_allclose(sigma, np.diag(eta * c / (2 * bs * a)), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_continuous_sigma_equals_eta_over_2S_C_Ainv_when_A_and_C_commute(seed):
    A, C = commuting_pair(5, seed)
    eta, bs = 0.05, 8
    sigma = T.stationary_covariance(A, C, eta, bs)
    np.testing.assert_allclose(sigma, eta / (2 * bs) * C @ np.linalg.inv(A), rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_continuous_sigma_solves_lyapunov_equation_17_and_is_spd(seed):
    A, C = noncommuting_pair(5, seed)
    eta, bs = 0.2, 32
    sigma = T.stationary_covariance(A, C, eta, bs)
    residual = sigma @ A + A @ sigma - eta / bs * C
    assert np.max(np.abs(residual)) < 1e-12 * np.max(np.abs(eta / bs * C))
    np.testing.assert_array_equal(sigma, sigma.T)
    assert np.linalg.eigvalsh(sigma)[0] > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_trace_sigma_equals_eta_over_2S_trace_CAinv_even_without_commutation(seed):
    A, C = noncommuting_pair(6, seed)
    eta, bs = 0.3, 64
    sigma = T.stationary_covariance(A, C, eta, bs)
    expected = eta / (2 * bs) * np.trace(C @ np.linalg.inv(A))
    assert np.trace(sigma) == pytest.approx(expected, rel=1e-11)


# ---------------------------------------------------------------- discrete SGD Sigma


def test_discrete_sigma_matches_closed_form_for_diagonal_A_and_C():
    # diagonal: Sigma_ii (1 - (1 - eta a)^2) = eta^2 c / |S|  =>  eta c / (|S| a (2 - eta a))
    a = np.array([0.5, 1.0, 3.0])
    c = np.array([2.0, 0.3, 1.5])
    eta, bs = 0.4, 4
    sigma = T.stationary_covariance(np.diag(a), np.diag(c), eta, bs, discrete=True)
    np.testing.assert_allclose(sigma, np.diag(eta * c / (bs * a * (2 - eta * a))), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_discrete_sigma_solves_discrete_lyapunov_equation(seed):
    A, C = noncommuting_pair(5, seed)
    eta, bs = 0.9 * 2 / np.linalg.eigvalsh(A)[-1], 2
    sigma = T.stationary_covariance(A, C, eta, bs, discrete=True)
    M = np.eye(5) - eta * A
    residual = sigma - M @ sigma @ M.T - eta**2 / bs * C
    assert np.max(np.abs(residual)) < 1e-11 * np.max(np.abs(sigma))
    np.testing.assert_array_equal(sigma, sigma.T)
    assert np.linalg.eigvalsh(sigma)[0] > 0


@pytest.mark.parametrize("factor", [1.0, 1.5])
def test_discrete_sigma_refused_when_eta_at_or_above_2_over_lambda_max(factor):
    A = np.diag([1.0, 4.0])  # 2/lambda_max = 0.5
    eta = 0.5 * factor
    with pytest.raises(T.TheoryError, match=re.escape(f"eta = {eta:.6g}") + r".*2/lambda_max\(A\) = 0\.5"):
        T.stationary_covariance(A, np.eye(2), eta, 1, discrete=True)
    # the continuous OU covariance exists for any eta > 0
    assert np.all(np.isfinite(T.stationary_covariance(A, np.eye(2), eta, 1)))


def test_continuous_sigma_differs_from_discrete_by_order_eta():
    A, C = noncommuting_pair(4, 7)
    lam_max = np.linalg.eigvalsh(A)[-1]

    def rel_diff(eta: float) -> float:
        sc = T.stationary_covariance(A, C, eta, 8)
        sd = T.stationary_covariance(A, C, eta, 8, discrete=True)
        return float(np.linalg.norm(sc - sd) / np.linalg.norm(sd))

    eta = 0.02 / lam_max
    r1, r2, r4 = rel_diff(eta), rel_diff(eta / 2), rel_diff(eta / 4)
    assert 0 < r4 < r2 < r1 < eta * lam_max  # O(eta), coefficient <= lambda_max
    assert r1 / r2 == pytest.approx(2.0, rel=0.02)
    assert r2 / r4 == pytest.approx(2.0, rel=0.01)


# ---------------------------------------------------------------------------------- KL


def test_kl_divergence_matches_closed_form_for_diagonal_sigma():
    s = np.array([0.5, 2.0, 0.01])
    expected = 0.5 * np.sum(s - 1 - np.log(s))
    assert T.kl_divergence(np.diag(s)) == pytest.approx(expected, rel=1e-13)


def test_kl_divergence_is_zero_for_prior_and_positive_otherwise():
    assert T.kl_divergence(np.eye(4)) == pytest.approx(0.0, abs=1e-15)
    A, C = noncommuting_pair(4, 0)
    assert T.kl_divergence(T.stationary_covariance(A, C, 0.1, 4)) > 0


def test_kl_divergence_is_infinite_for_singular_sigma():
    assert T.kl_divergence(np.diag([1.0, 0.0])) == math.inf


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_four_kl_equals_trace_minus_logdet_terms_of_eq16(seed):
    A, C = noncommuting_pair(5, seed)
    eta, bs = 0.1, 16
    sigma = T.stationary_covariance(A, C, eta, bs)
    lhs = 4 * T.kl_divergence(sigma)
    rhs = eta / bs * np.trace(C @ np.linalg.inv(A)) - 2 * np.linalg.slogdet(sigma)[1] - 2 * 5
    assert lhs == pytest.approx(rhs, rel=1e-10)


# --------------------------------------------------------------------------- Theorem 1


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("pair", [commuting_pair, noncommuting_pair])
def test_theorem1_equals_printed_eq16_evaluated_literally(seed, pair):
    A, C = pair(5, seed)
    args = (A, C, 0.1, 32, 5000, 0.05)
    assert T.theorem1_bound(*args) == pytest.approx(printed_eq16(*args), rel=1e-10)


def test_theorem1_equals_mcallester_bound_with_independent_kl():
    a, c = np.array([1.0, 2.0, 4.0]), np.array([0.5, 1.0, 2.0])
    eta, bs, n, delta = 0.5, 2, 100, 0.1
    s = eta * c / (2 * bs * a)
    kl = 0.5 * np.sum(s - 1 - np.log(s))
    expected = math.sqrt((kl + math.log(1 / delta) + math.log(n) + 2) / (2 * n - 1))
    assert T.theorem1_bound(np.diag(a), np.diag(c), eta, bs, n, delta) == pytest.approx(expected, rel=1e-12)
    assert T.mcallester_bound(np.diag(s), n, delta) == pytest.approx(expected, rel=1e-12)


def test_theorem1_discrete_is_mcallester_bound_of_discrete_sigma_not_printed_trace_term():
    A, C = noncommuting_pair(4, 3)
    eta, bs, n, delta = 0.8 * 2 / np.linalg.eigvalsh(A)[-1], 4, 1000, 0.05
    sd = T.stationary_covariance(A, C, eta, bs, discrete=True)
    got = T.theorem1_bound(A, C, eta, bs, n, delta, discrete=True)
    assert got == pytest.approx(T.mcallester_bound(sd, n, delta), rel=1e-12)
    # the printed trace term (eta/|S|) tr(CA^-1) is 2 tr(Sigma) only for eq. 17:
    assert 2 * np.trace(sd) > eta / bs * np.trace(C @ np.linalg.inv(A)) * 1.05


def test_theorem1_is_infinite_when_sigma_is_singular():
    # C kills a direction that A does not mix in: Sigma is singular, KL = inf.
    assert T.theorem1_bound(np.diag([1.0, 2.0]), np.diag([1.0, 0.0]), 0.1, 1, 100, 0.05) == math.inf


# --------------------------------------------------------------------------- Theorem 2


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_theorem2_equals_printed_eq18_evaluated_literally(seed):
    A, C = noncommuting_pair(5, seed)
    args = (A, C, 0.05, 64, 2000, 0.01)
    assert T.theorem2_bound(*args) == pytest.approx(printed_eq18(*args), rel=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
def test_theorem2_equals_theorem1_when_A_and_C_commute(seed):
    A, C = commuting_pair(6, seed)
    assert T.commutator_norm(A, C) < 1e-12
    for eta, bs, n in [(0.1, 32, 100), (1.0, 1, 10), (0.01, 512, 50000)]:
        t1 = T.theorem1_bound(A, C, eta, bs, n, 0.05)
        t2 = T.theorem2_bound(A, C, eta, bs, n, 0.05)
        assert t2 == pytest.approx(t1, rel=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_theorem2_exceeds_theorem1_when_A_and_C_do_not_commute(seed):
    # Ostrowski-Taussky: log det Sigma >= log det((eta/2|S|) C A^-1), equality iff AC = CA.
    # Over all seeds tried (including a search below) eq. 18 was never below eq. 16.
    A, C = noncommuting_pair(6, seed)
    assert T.commutator_norm(A, C) > 1e-3
    eta, bs, n = 0.1, 32, 100
    t1 = T.theorem1_bound(A, C, eta, bs, n, 0.05)
    t2 = T.theorem2_bound(A, C, eta, bs, n, 0.05)
    assert t2 > t1
    # the gap in the squared bounds is exactly the log-det gap / (4N - 2)
    sigma = T.stationary_covariance(A, C, eta, bs)
    gap = np.linalg.slogdet(sigma)[1] - np.linalg.slogdet(eta / (2 * bs) * C @ np.linalg.inv(A))[1]
    assert gap > 1e-6
    assert t2**2 - t1**2 == pytest.approx(gap / (4 * n - 2), rel=1e-6)


def test_logdet_sigma_never_below_logdet_of_commuting_formula_over_many_pairs():
    rng = np.random.default_rng(42)
    gaps = []
    for _ in range(200):
        d = int(rng.integers(2, 7))
        A = random_spd(d, rng, 0.01, 10.0)
        # ill-conditioned, strongly non-commuting C as a stress test
        C = random_spd(d, rng, 1e-3, 10.0)
        sigma = T.stationary_covariance(A, C, 1.0, 1)
        gaps.append(np.linalg.slogdet(sigma)[1] - np.linalg.slogdet(0.5 * C @ np.linalg.inv(A))[1])
    assert min(gaps) > 0


def test_theorem2_refuses_singular_C_and_says_theorem1_still_applies():
    A = np.array([[2.0, 0.5], [0.5, 1.0]])
    C = np.array([[1.0, 1.0], [1.0, 1.0]])  # rank 1
    with pytest.raises(T.TheoryError, match=r"C is singular.*Theorem 1.*still applies"):
        T.theorem2_bound(A, C, 0.1, 1, 100, 0.05)
    assert math.isfinite(T.theorem1_bound(A, C, 0.1, 1, 100, 0.05))  # (A, C) controllable


# ------------------------------------------------------- commutator, Assumption 2, r*


def test_commutator_norm_matches_hand_computed_value_and_vanishes_for_commuting_pairs():
    A = np.diag([1.0, 2.0])
    C = np.ones((2, 2))  # AC - CA = [[0, -1], [1, 0]]
    assert T.commutator_norm(A, C) == pytest.approx(math.sqrt(2) / (math.sqrt(5) * 2), rel=1e-14)
    assert T.commutator_norm(*commuting_pair(4, 0)) < 1e-12
    assert T.commutator_norm(np.eye(2), np.zeros((2, 2))) == 0.0


def test_assumption2_is_d_greater_than_trace_term_of_eq19():
    A, C = np.diag([1.0, 2.0]), np.diag([4.0, 2.0])  # tr(CA^-1) = 5, d = 2
    # eq. 19: 2 > 5 eta / (2|S|)
    assert T.assumption2_holds(A, C, 1.0, 2)  # 2 > 1.25
    assert not T.assumption2_holds(A, C, 1.0, 1)  # 2 > 2.5 is false
    assert not T.assumption2_holds(A, C, 0.8, 1)  # 2 > 2.0 is false (strict)
    assert T.assumption2_holds(A, C, 0.79, 1)  # 2 > 1.975


def test_critical_ratio_matches_closed_form_for_diagonal_matrices():
    a, c = np.array([1.0, 2.0, 4.0]), np.array([3.0, 1.0, 2.0])
    assert T.critical_ratio(np.diag(a), np.diag(c)) == pytest.approx(np.sum(c / a) / 6, rel=1e-14)


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_assumption2_holds_exactly_when_ratio_exceeds_critical_ratio(seed):
    A, C = noncommuting_pair(4, seed)
    r_star = T.critical_ratio(A, C)
    for r in r_star * np.array([0.25, 0.9, 0.999, 1.001, 1.1, 4.0]):
        assert T.assumption2_holds(A, C, 1.0 / r, 1) == (r > r_star)


@pytest.mark.parametrize("which", ["theorem2", "theorem1"])
@pytest.mark.parametrize("seed", SEEDS[:3])
def test_bound_as_function_of_ratio_is_minimised_at_critical_ratio(seed, which):
    A, C = noncommuting_pair(5, seed)
    r_star = T.critical_ratio(A, C)
    fn = T.theorem2_bound if which == "theorem2" else T.theorem1_bound

    def bound(log_r: float) -> float:
        return fn(A, C, 1.0 / math.exp(log_r), 1, 1000, 0.05)  # |S| = 1, eta = 1/r

    res = scipy.optimize.minimize_scalar(
        bound, bracket=(math.log(r_star) - 2, math.log(r_star) + 2), tol=1e-10
    )
    assert math.exp(res.x) == pytest.approx(r_star, rel=1e-3)
    # Corollary 1: decreasing below r*, increasing above (monotone on a grid)
    below = [bound(math.log(r)) for r in r_star * np.linspace(0.2, 0.99, 20)]
    above = [bound(math.log(r)) for r in r_star * np.linspace(1.01, 20, 20)]
    assert np.all(np.diff(below) < 0)
    assert np.all(np.diff(above) > 0)


# ------------------------------------------------------------- the prior's scale


def _gaussian_kl(Q: np.ndarray, P: np.ndarray) -> float:
    """KL(N(0, Q) || N(0, P)) by the general formula (no shortcut for P = s^2 I)."""
    d = Q.shape[0]
    return 0.5 * (np.trace(np.linalg.solve(P, Q)) - d
                  + np.linalg.slogdet(P)[1] - np.linalg.slogdet(Q)[1])


@pytest.mark.parametrize("s2", [0.01, 0.5, 4.0])
def test_kl_with_a_scaled_prior_matches_the_general_gaussian_formula(s2):
    A, C = noncommuting_pair(5, 3)
    sigma = T.stationary_covariance(A, C, 0.05, 16)
    assert T.kl_divergence(sigma, prior_variance=s2) == pytest.approx(
        _gaussian_kl(sigma, s2 * np.eye(5)), rel=1e-10)
    assert T.kl_divergence(sigma) == pytest.approx(_gaussian_kl(sigma, np.eye(5)), rel=1e-10)


@pytest.mark.parametrize("which", ["theorem2", "theorem1"])
def test_the_critical_ratio_moves_with_the_priors_scale(which):
    # r* = tr(C A^-1) / (2 d s^2): the bound's minimiser in |S|/eta, found numerically.
    A, C = noncommuting_pair(5, 1)
    fn = T.theorem2_bound if which == "theorem2" else T.theorem1_bound
    for s2 in (0.25, 1.0, 3.0):
        r_star = T.critical_ratio(A, C, prior_variance=s2)
        assert r_star == pytest.approx(T.critical_ratio(A, C) / s2, rel=1e-12)

        def bound(log_r: float) -> float:
            return fn(A, C, 1.0 / math.exp(log_r), 1, 1000, 0.05, prior_variance=s2)

        res = scipy.optimize.minimize_scalar(
            bound, bracket=(math.log(r_star) - 2, math.log(r_star) + 2), tol=1e-10)
        assert math.exp(res.x) == pytest.approx(r_star, rel=1e-3)


def test_whether_assumption2_holds_depends_on_the_priors_scale():
    A, C = noncommuting_pair(4, 2)
    r = 2.0 * T.critical_ratio(A, C)  # above r* for the paper's prior N(0, I)
    assert T.assumption2_holds(A, C, 1.0 / r, 1)
    # A prior four times narrower puts r* at 4x: the same cell now violates it.
    assert not T.assumption2_holds(A, C, 1.0 / r, 1, prior_variance=0.25)
    report = T.evaluate_bounds(A, C, 1.0 / r, 1, 1000, prior_variance=0.25)
    assert report.prior_variance == 0.25 and not report.assumption2
    assert report.critical_ratio == pytest.approx(4 * T.critical_ratio(A, C))


@pytest.mark.parametrize("s2", [0.3, 2.0])
def test_theorem2_still_equals_theorem1_for_commuting_matrices_with_a_scaled_prior(s2):
    A, C = commuting_pair(4, 0)
    t1 = T.theorem1_bound(A, C, 0.05, 16, 5000, 0.05, prior_variance=s2)
    t2 = T.theorem2_bound(A, C, 0.05, 16, 5000, 0.05, prior_variance=s2)
    assert t2 == pytest.approx(t1, rel=1e-10)
    assert t1 != pytest.approx(T.theorem1_bound(A, C, 0.05, 16, 5000, 0.05), rel=1e-6)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True])
def test_a_prior_variance_that_is_not_positive_is_refused_naming_it(bad):
    A, C = commuting_pair(3, 0)
    with pytest.raises(T.TheoryError, match="prior_variance"):
        T.critical_ratio(A, C, prior_variance=bad)


def test_bounds_depend_on_eta_and_batch_size_only_through_their_ratio():
    A, C = noncommuting_pair(4, 1)
    for fn in (T.theorem1_bound, T.theorem2_bound):
        b1 = fn(A, C, 0.1, 32, 1000, 0.05)
        b2 = fn(A, C, 0.4, 128, 1000, 0.05)
        assert b1 == pytest.approx(b2, rel=1e-12)


# ---------------------------------------------------------------------- BoundReport


def test_evaluate_bounds_report_agrees_with_individual_functions_and_serialises():
    A, C = noncommuting_pair(4, 2)
    eta, bs, n, delta = 0.05, 16, 5000, 0.05
    rep = T.evaluate_bounds(A, C, eta, bs, n, delta)
    sc = T.stationary_covariance(A, C, eta, bs)
    sd = T.stationary_covariance(A, C, eta, bs, discrete=True)
    assert rep.d == 4
    assert rep.ratio == pytest.approx(bs / eta)
    assert rep.trace_CAinv == pytest.approx(np.trace(C @ np.linalg.inv(A)), rel=1e-12)
    assert rep.trace_sigma == pytest.approx(eta / (2 * bs) * rep.trace_CAinv, rel=1e-10)
    assert rep.logdet_sigma == pytest.approx(np.linalg.slogdet(sc)[1], rel=1e-12)
    assert rep.logdet_sigma_discrete == pytest.approx(np.linalg.slogdet(sd)[1], rel=1e-12)
    assert rep.kl == pytest.approx(T.kl_divergence(sc), rel=1e-12)
    assert rep.kl_discrete == pytest.approx(T.kl_divergence(sd), rel=1e-12)
    assert rep.theorem1 == pytest.approx(T.theorem1_bound(A, C, eta, bs, n, delta), rel=1e-12)
    assert rep.theorem1_discrete == pytest.approx(
        T.theorem1_bound(A, C, eta, bs, n, delta, discrete=True), rel=1e-12
    )
    assert rep.theorem2 == pytest.approx(T.theorem2_bound(A, C, eta, bs, n, delta), rel=1e-12)
    assert rep.theorem2 > rep.theorem1
    assert rep.theorem2_reason is None and rep.discrete_reason is None
    assert rep.commutator_norm == pytest.approx(T.commutator_norm(A, C))
    assert rep.assumption2 is T.assumption2_holds(A, C, eta, bs)
    assert rep.critical_ratio == pytest.approx(T.critical_ratio(A, C))
    d = rep.as_dict()
    assert set(d) == {f.name for f in __import__("dataclasses").fields(T.BoundReport)}
    json.dumps(d)  # builtin types only


def test_evaluate_bounds_gives_none_with_reasons_for_singular_C_and_too_large_eta():
    A = np.array([[2.0, 0.5], [0.5, 1.0]])
    C = np.array([[1.0, 1.0], [1.0, 1.0]])
    eta = 1.1 * 2 / np.linalg.eigvalsh(A)[-1]
    rep = T.evaluate_bounds(A, C, eta, 1, 100)
    assert rep.delta == 0.05
    assert rep.theorem2 is None and "Theorem 1" in rep.theorem2_reason
    assert rep.theorem1_discrete is None and rep.kl_discrete is None and rep.logdet_sigma_discrete is None
    assert "2/lambda_max" in rep.discrete_reason
    assert math.isfinite(rep.theorem1)


# ---------------------------------------------------------------------- simulation


def _simulation_setup():
    A = np.array(
        [[2.0, 0.6, 0.0, 0.3], [0.6, 1.5, 0.4, 0.0], [0.0, 0.4, 3.0, 0.5], [0.3, 0.0, 0.5, 1.0]]
    )
    C = np.array(
        [[1.0, 0.3, -0.2, 0.0], [0.3, 2.0, 0.5, 0.1], [-0.2, 0.5, 1.5, 0.0], [0.0, 0.1, 0.0, 0.5]]
    )
    return A, C


def _eigenbasis_z_scores(A, eta, sigma_hat, sigma_ref, n_samples):
    """z-scores of sigma_hat - sigma_ref in A's eigenbasis, with the exact MC variance.

    In A's eigenbasis each coordinate y_i is a scalar AR(1) with coefficient
    rho_i = 1 - eta lambda_i, so Cov(y_i y_j (t+k), y_i y_j (t)) =
    (rho_i rho_j)^|k| (S_ii S_jj + S_ij^2) and the time average over n samples has
    variance (S_ii S_jj + S_ij^2) (1 + rho_i rho_j) / (1 - rho_i rho_j) / n,
    i.e. n / tau_ij effective samples.
    """
    lam, V = np.linalg.eigh(A)
    rho = 1 - eta * lam
    S = V.T @ sigma_ref @ V
    rr = np.outer(rho, rho)
    var = (np.outer(np.diag(S), np.diag(S)) + S**2) * (1 + rr) / (1 - rr) / n_samples
    return (V.T @ sigma_hat @ V - S) / np.sqrt(var)


@pytest.fixture(scope="module")
def simulation():
    A, C = _simulation_setup()
    eta, bs = 0.5 / np.linalg.eigvalsh(A)[-1], 4  # eta lambda in (0.x, 0.5]
    rho_max = np.max(np.abs(1 - eta * np.linalg.eigvalsh(A)))
    burn_in = int(math.ceil(math.log(1e-12) / (2 * math.log(rho_max))))  # transient < 1e-12
    chains, kept = 2000, 1500
    sigma_hat = T.simulate_sgd(A, C, eta, bs, steps=burn_in + kept, burn_in=burn_in, seed=12345, chains=chains)
    return A, C, eta, bs, sigma_hat, chains * kept


def test_simulated_sgd_covariance_matches_discrete_sigma_within_monte_carlo_error(simulation):
    A, C, eta, bs, sigma_hat, n = simulation
    sd = T.stationary_covariance(A, C, eta, bs, discrete=True)
    z = _eigenbasis_z_scores(A, eta, sigma_hat, sd, n)
    assert np.max(np.abs(z)) < 5.0  # 10 distinct entries, 5 standard errors each


def test_simulation_distinguishes_discrete_from_continuous_sigma(simulation):
    A, C, eta, bs, sigma_hat, n = simulation
    sd = T.stationary_covariance(A, C, eta, bs, discrete=True)
    sc = T.stationary_covariance(A, C, eta, bs)
    z_cont = _eigenbasis_z_scores(A, eta, sigma_hat, sc, n)
    assert np.max(np.abs(z_cont)) > 20.0  # continuous OU covariance is rejected
    assert np.linalg.norm(sigma_hat - sd) < 0.1 * np.linalg.norm(sigma_hat - sc)


# ----------------------------------------------------------------------- bad inputs


GOOD_A = np.diag([1.0, 2.0])
GOOD_C = np.eye(2)


def test_bad_input_can_be_caught_as_the_value_error_callers_expect():
    # Callers (and numpy/scipy habits) catch ValueError; a TheoryError must be one, raised
    # by a real call with the offending value in its message.
    with pytest.raises(ValueError, match=r"delta must lie in .* got 2"):
        T.theorem1_bound(GOOD_A, GOOD_C, 0.1, 1, 100, 2)


def test_rejects_A_not_positive_definite_and_reports_smallest_eigenvalue():
    with pytest.raises(T.TheoryError, match=r"smallest eigenvalue is -0\.5"):
        T.theorem1_bound(np.diag([1.0, -0.5]), GOOD_C, 0.1, 1, 100, 0.05)
    with pytest.raises(T.TheoryError, match=r"positive definite.*smallest eigenvalue is 0\b"):
        T.stationary_covariance(np.diag([1.0, 0.0]), GOOD_C, 0.1, 1)


def test_rejects_non_symmetric_matrices():
    with pytest.raises(T.TheoryError, match=r"A is not symmetric"):
        T.stationary_covariance(np.array([[1.0, 1.0], [0.0, 1.0]]), GOOD_C, 0.1, 1)
    with pytest.raises(T.TheoryError, match=r"C is not symmetric"):
        T.stationary_covariance(GOOD_A, np.array([[1.0, 0.5], [0.0, 1.0]]), 0.1, 1)


def test_rejects_C_not_psd_and_reports_smallest_eigenvalue():
    with pytest.raises(T.TheoryError, match=r"semi-definite.*smallest eigenvalue is -0\.25"):
        T.theorem2_bound(GOOD_A, np.diag([1.0, -0.25]), 0.1, 1, 100, 0.05)


def test_accepts_C_with_roundoff_negative_eigenvalue():
    sigma = T.stationary_covariance(GOOD_A, np.diag([1.0, -1e-13]), 0.1, 1)
    assert sigma.shape == (2, 2)


@pytest.mark.parametrize(
    "A, C, pattern",
    [
        (np.eye(3), np.eye(2), r"\(2, 2\).*\(3, 3\)"),
        (np.ones((2, 3)), np.eye(2), r"shape \(2, 3\)"),
        (np.ones(3), np.eye(3), r"shape \(3,\)"),
        (np.eye(2), np.ones((2, 3)), r"shape \(2, 3\)"),
    ],
)
def test_rejects_mismatched_or_non_square_shapes(A, C, pattern):
    with pytest.raises(T.TheoryError, match=pattern):
        T.evaluate_bounds(A, C, 0.1, 1, 100)


@pytest.mark.parametrize("n", [0, 0.5, -3])
def test_rejects_training_set_size_below_one(n):
    with pytest.raises(T.TheoryError, match=rf"n must be .*got {re.escape(repr(n))}"):
        T.theorem1_bound(GOOD_A, GOOD_C, 0.1, 1, n, 0.05)
    with pytest.raises(T.TheoryError, match=rf"got {re.escape(repr(n))}"):
        T.theorem2_bound(GOOD_A, GOOD_C, 0.1, 1, n, 0.05)


@pytest.mark.parametrize("delta", [0, 0.0, 1, 1.5, -0.1])
def test_rejects_delta_outside_open_unit_interval(delta):
    with pytest.raises(T.TheoryError, match=rf"delta .*\(0, 1\), got {re.escape(repr(delta))}"):
        T.theorem1_bound(GOOD_A, GOOD_C, 0.1, 1, 100, delta)
    with pytest.raises(T.TheoryError, match=rf"got {re.escape(repr(delta))}"):
        T.mcallester_bound(np.eye(2), 100, delta)


@pytest.mark.parametrize("eta", [0, 0.0, -0.1, float("nan")])
def test_rejects_non_positive_learning_rate(eta):
    with pytest.raises(T.TheoryError, match=rf"learning_rate .*got {re.escape(repr(eta))}"):
        T.stationary_covariance(GOOD_A, GOOD_C, eta, 1)
    with pytest.raises(T.TheoryError, match=rf"learning_rate .*got {re.escape(repr(eta))}"):
        T.assumption2_holds(GOOD_A, GOOD_C, eta, 1)


@pytest.mark.parametrize("bs", [0, 0.5, -1])
def test_rejects_batch_size_below_one(bs):
    with pytest.raises(T.TheoryError, match=rf"batch_size .*got {re.escape(repr(bs))}"):
        T.theorem2_bound(GOOD_A, GOOD_C, 0.1, bs, 100, 0.05)


def test_simulate_sgd_rejects_bad_steps_and_divergent_eta():
    with pytest.raises(T.TheoryError, match=r"burn_in = 10, steps = 10"):
        T.simulate_sgd(GOOD_A, GOOD_C, 0.1, 1, steps=10, burn_in=10, seed=0)
    with pytest.raises(T.TheoryError, match=r"eta = 1 >= 2/lambda_max\(A\) = 1"):
        T.simulate_sgd(GOOD_A, GOOD_C, 1.0, 1, steps=10, burn_in=0, seed=0)


def test_kl_divergence_rejects_non_psd_sigma():
    with pytest.raises(T.TheoryError, match=r"smallest eigenvalue is -1"):
        T.kl_divergence(np.diag([1.0, -1.0]))


def test_eigenbasis_solution_equals_scipys_lyapunov_solvers():
    import scipy.linalg

    rng = np.random.default_rng(11)
    for d in (3, 8, 20):
        M = rng.normal(size=(d, d))
        A = M @ M.T + d * np.eye(d)
        B = rng.normal(size=(d, d))
        C = B @ B.T
        eta, bs = 0.5 / np.linalg.eigvalsh(A).max(), 32
        continuous = T.stationary_covariance(A, C, eta, bs)
        np.testing.assert_allclose(
            continuous, scipy.linalg.solve_continuous_lyapunov(A, (eta / bs) * C),
            rtol=1e-9, atol=1e-12 * np.abs(continuous).max())
        discrete = T.stationary_covariance(A, C, eta, bs, discrete=True)
        M_ = np.eye(d) - eta * A
        np.testing.assert_allclose(
            discrete, scipy.linalg.solve_discrete_lyapunov(M_, (eta * eta / bs) * C),
            rtol=1e-9, atol=1e-12 * np.abs(discrete).max())
