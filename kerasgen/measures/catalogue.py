"""The generalization measures kerasgen knows: names, families, how each is computed,
which way it should point, and which ones ``kerasgen measures`` computes by default.

No TensorFlow, no SQL: the command line validates ``--measures`` with it before
TensorFlow is imported, and the report and the dashboard label their tables with it.

Sources
-------
``network``  computed by ``kerasgen measures`` from a run's kept weights (and the
             group's initial weights) on its clean training subset; stored in the
             ``measures`` table.
``store``    derived from the ``epochs`` and ``cells`` tables when the measures are
             ranked (always current; nothing to compute).
``bounds``   the paper's own terms, read from the ``bounds`` table (``kerasgen bound``)
             when it has rows.
``grid``     the run's coordinates (the ratio |S|/eta): the reference every measure is
             held against.

``sign`` is the direction Jiang et al. (2020) orient a measure in: +1 when a larger value
should mean a larger generalization gap (a "complexity"), -1 when it should mean a
smaller one (the output margin). The ranking keeps the sign of every coefficient and
ranks by its size; ``against`` in the report flags a coefficient of the other sign.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measure:
    name: str
    family: str        # norm | sharpness | noise | optimisation | paper | reference
    source: str        # network | store | bounds | grid
    label: str         # short, for tables
    sign: int          # expected sign of its correlation with the gap
    default: bool      # computed by `kerasgen measures` without --measures
    cost: str          # what its time scales with: params | forward | backward | hvp | none
    description: str


_M = Measure
MEASURES: dict[str, Measure] = {m.name: m for m in (
    # -- norms (weights only; batch norm folded into the convolution before it)
    _M("dist_init", "norm", "network", "‖w − w₀‖₂", +1, True, "params",
       "distance from the group's initial weights over every trainable variable"),
    _M("sum_fro", "norm", "network", "Σ‖W‖_F", +1, True, "params",
       "sum of the layers' Frobenius norms (conv and dense kernels, batch norm folded)"),
    _M("log_prod_fro", "norm", "network", "log Π‖W‖_F", +1, True, "params",
       "log of the product of the layers' Frobenius norms"),
    _M("log_prod_spec", "norm", "network", "log Π‖W‖₂ (kernel)", +1, True, "params",
       "log of the product of spectral norms of the reshaped kernels (k·k·c_in × c_out), "
       "power iteration"),
    _M("log_prod_spec_conv", "norm", "network", "log Π‖conv‖₂", +1, True, "forward",
       "log of the product of spectral norms of the convolution operators on each layer's "
       "input shape (power iteration with the convolution and its transpose)"),
    _M("log_path_norm", "norm", "network", "log path norm", +1, True, "forward",
       "log of the l2 path norm: the network's output summed on an all-ones input with "
       "every weight squared (batch norm folded, biases zero; Neyshabur et al. 2015)"),
    # -- sharpness (the mean cross-entropy on the clean training subset, BN inference)
    _M("hessian_top", "sharpness", "network", "λ_max(H)", +1, True, "hvp",
       "largest Hessian eigenvalue of the training loss, Lanczos"),
    _M("hessian_trace", "sharpness", "network", "tr(H)", +1, True, "hvp",
       "Hessian trace, Hutchinson's estimator with Rademacher probes"),
    _M("eps_sharpness", "sharpness", "network", "ε-sharpness", +1, True, "backward",
       "Keskar et al. (2017): 100·(max loss in the box |δ_i| ≤ ε(|w_i|+1) − loss)/(1 + loss), "
       "projected gradient ascent"),
    _M("pacbayes_flatness", "sharpness", "network", "1/σ′²", +1, True, "forward",
       "Jiang et al. (2020): 1/σ′² for the largest σ′ whose Gaussian perturbation N(0, σ′² I) "
       "raises the expected training loss by at most a set amount, bisection"),
    _M("pacbayes_mag_flatness", "sharpness", "network", "1/σ′² (magnitude)", +1, True,
       "forward",
       "the same with magnitude-aware noise N(0, σ′² w_i² + ε²) (Jiang et al. 2020)"),
    _M("adaptive_sharpness", "sharpness", "network", "adaptive sharpness", +1, True,
       "backward",
       "ASAM-style (Kwon et al. 2021): max loss increase over ‖δ/(|w| + η)‖₂ ≤ ρ, projected "
       "gradient ascent (invariant to rescaling a layer)"),
    # -- gradient noise (per-example gradients on the clean training subset)
    _M("noise_trace", "noise", "network", "tr(C)", +1, True, "backward",
       "trace of the per-example gradient covariance C at the kept weights"),
    _M("b_simple", "noise", "network", "B_simple", +1, True, "backward",
       "gradient noise scale tr(C)/|g|² at the kept weights (McCandlish et al. 2018)"),
    _M("b_simple_init", "noise", "network", "B_simple at init", +1, True, "backward",
       "tr(C)/|g|² at the group's initial weights: the critical batch size at the start "
       "(one value per model, data set and seed)"),
    # -- optimisation
    _M("output_margin", "optimisation", "network", "margin (10th pct)", -1, True, "forward",
       "10th percentile over the clean training subset of logit_y − max_{j≠y} logit_j"),
    _M("epochs_to_stop", "optimisation", "store", "epochs to stop", +1, False, "none",
       "epochs until the stop rule's training loss (or 99% clean training accuracy)"),
    _M("steps_to_stop", "optimisation", "store", "steps to stop", +1, False, "none",
       "SGD steps until the same point (epochs × steps per epoch)"),
    _M("train_loss_kept", "optimisation", "store", "train loss (kept)", +1, False, "none",
       "clean training loss at the kept epoch"),
    # -- the paper's own terms (kerasgen bound)
    _M("theorem1", "paper", "bounds", "Theorem 1", +1, False, "none",
       "He et al. (2019) eq. 16 from the bounds table"),
    _M("theorem2", "paper", "bounds", "Theorem 2", +1, False, "none",
       "He et al. (2019) eq. 18 from the bounds table"),
    _M("trace_ca_inv", "paper", "bounds", "tr(CA⁻¹)", +1, False, "none",
       "tr(C A^-1) from the bounds table"),
    # -- the reference
    _M("ratio", "reference", "grid", "|S|/η (ratio)", +1, False, "none",
       "the run's batch size over its learning rate: the paper's predictor"),
)}

FAMILIES = ("norm", "sharpness", "noise", "optimisation", "paper", "reference")
NETWORK_MEASURES = tuple(n for n, m in MEASURES.items() if m.source == "network")
DEFAULT_MEASURES = tuple(n for n, m in MEASURES.items() if m.source == "network" and m.default)


class MeasureError(ValueError):
    """A measure request that cannot be honoured; the message names the value."""


def check_measure_names(names) -> tuple[str, ...]:
    """The network measures ``names`` asks for (``all``: every one; a family name: its
    measures), in catalogue order. An unknown name raises :class:`MeasureError` naming it;
    a measure derived from the store or the bounds table needs no computing and is named
    in the error too, so a typo and a misunderstanding read alike."""
    wanted: list[str] = []
    for raw in names:
        for name in (p.strip() for p in str(raw).split(",")):
            if not name:
                continue
            if name == "all":
                wanted.extend(NETWORK_MEASURES)
            elif name == "default":
                wanted.extend(DEFAULT_MEASURES)
            elif name in FAMILIES:
                wanted.extend(n for n in NETWORK_MEASURES if MEASURES[n].family == name)
            elif name in MEASURES and MEASURES[name].source != "network":
                where = {"store": "the epochs table", "bounds": "the bounds table "
                         "(kerasgen bound)", "grid": "the run's coordinates"}[MEASURES[name].source]
                raise MeasureError(f"measure {name!r} is read from {where} when measures are "
                                   "ranked; there is nothing to compute for it")
            elif name in MEASURES:
                wanted.append(name)
            else:
                raise MeasureError(
                    f"unknown measure {name!r}; choose from {', '.join(NETWORK_MEASURES)}, a "
                    f"family ({', '.join(FAMILIES[:3])}), 'default' or 'all'")
    if not wanted:
        raise MeasureError("no measure named; give measure names, a family, 'default' or 'all'")
    order = {n: i for i, n in enumerate(NETWORK_MEASURES)}
    return tuple(sorted(set(wanted), key=order.__getitem__))


def measure_label(name: str) -> str:
    """The short label of a measure (``name[params]`` for the bound terms of a parameter
    set; the name itself for one the catalogue does not know)."""
    base, _, rest = name.partition("[")
    measure = MEASURES.get(base)
    if measure is None:
        return name
    return measure.label + (f" [{rest}" if rest else "")


def measure_sign(name: str) -> int:
    measure = MEASURES.get(name.partition("[")[0])
    return measure.sign if measure is not None else 1


def measure_family(name: str) -> str:
    measure = MEASURES.get(name.partition("[")[0])
    return measure.family if measure is not None else "other"


__all__ = ["DEFAULT_MEASURES", "FAMILIES", "MEASURES", "Measure", "MeasureError",
           "NETWORK_MEASURES", "check_measure_names", "measure_family", "measure_label",
           "measure_sign"]
