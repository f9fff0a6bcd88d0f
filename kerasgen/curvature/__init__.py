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
``eigvalsh`` 20x slower.  On the one-seed demo store (32 runs, 1,347 images) ``kerasgen
bound`` (classifier) took about 2 minutes on 2 cores (the two-seed demo has twice the
runs); ``--params all`` about 1.5 minutes per ResNet-8 run with the defaults.

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

from kerasgen.curvature.autodiff import (
    CurvatureEstimate,
    Objective,
    ParameterSelection,
    bound_terms,
    estimate_curvature,
    select_parameters,
    trace_CAinv_cg,
)
from kerasgen.curvature.config import CurvatureConfig, CurvatureError
from kerasgen.curvature.linalg import (
    conjugate_gradient,
    evaluate_bounds_eig,
    gradient_covariance,
    lanczos,
    projection_sensitivity,
    ritz_pairs,
    slq_logdet,
    treat_dense,
)
from kerasgen.curvature.runs import compute_bounds_for_store

__all__ = [
    "CurvatureConfig", "CurvatureError", "CurvatureEstimate", "Objective",
    "ParameterSelection", "bound_terms", "compute_bounds_for_store", "conjugate_gradient",
    "estimate_curvature", "evaluate_bounds_eig", "gradient_covariance", "lanczos",
    "projection_sensitivity", "ritz_pairs", "select_parameters", "slq_logdet",
    "trace_CAinv_cg", "treat_dense",
]
