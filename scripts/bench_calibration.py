"""Calibration of the report's intervals and verdicts on simulated grids with a known truth.

Every statement the report prints about a grid (an interval, a p-value below alpha,
"above seed noise", a premise warning, "only the ratio matters") is a procedure with a
stated rate: a 95 % interval should cover what it claims to cover 95 % of the time, a test
at alpha should reject a true null at most alpha of the time. This script measures those
rates. It simulates grids whose truth is known, passes them through the very functions
the report calls (``kerasgen.analysis.spearman_tests``, ``noise_floor``,
``premise_check`` and, where it exists, ``ratio_model``) and prints, per scenario:

- the coverage of every interval the report labels a confidence interval (the columns
  ``*_low``/``*_high`` of the tests frame and of the ratio model that hold a value), and
- the false-positive rate of every verdict on data where the verdict's null is true.

Targets (issue 21): coverage 0.90-0.99 wherever a 95 % interval is printed; a verdict's
false-positive rate at most 1.2 x its nominal level (at most 0.10 for the noise floor's
"above noise").

The truth
---------
Cells are a fixed design (the grid the study trains), and runs of a cell are replicates
(seeds): the only randomness is the seeds'. A coefficient's interval claims to cover
**the coefficient this grid gives with k seeds, on average over draws of the seeds**:
E[rho_k], Spearman's rho of the cells' k-seed means against the test's variable,
averaged over independent draws of the k seeds (computed here by simulation, from draws
apart from the ones evaluated). Likewise a Theil-Sen slope's truth is E[slope_k]. Where
the cell means are flat (pure noise) both are 0 by symmetry. The ratio model's truth is
the least-squares fit of the noise-free cell means mu(b, l) on log2(batch size) and
log2(learning rate) (a linear estimator: its expectation is that fit at any k).

Why not the coefficient of the noise-free means, rho(mu)? Noise pulls |rho| towards 0
(attenuation), by an amount that depends on how far apart neighbouring cells' true means
are relative to the seed noise, and a rank statistic's bias does not shrink as a smooth
1/k: no interval built from k noisy seeds covers rho(mu) at its rate (a jackknife bias
correction covered it about 60 % of the time at 10 seeds; see the "noise-free"
information rows, printed for every interval). As k grows, E[rho_k] tends to rho(mu)
wherever the cells' true differences exceed the seed noise of their means.

Scenarios
---------
Grids: the paper's 20 x 20 (batch sizes 16..320, learning rates 0.01..0.20) and the
demo's 4 x 4 (16..128, 0.025..0.2); 1, 2, 3, 5 and 10 seeds. Truths:

- ``surface``: accuracy falls with log2(batch size / learning rate) plus a smooth bump
  in (log2 BS, log2 LR), so the groups' true coefficients spread over (-1, 1); the
  signal's SD across cells is 5 seed SDs on the paper grid (CIFAR-like: cells span
  several points, seeds differ by a few tenths) and 1 on the demo grid (the digits demo:
  a range of about a point against a seed SD of 0.35);
- ``ratio``: accuracy a function of log2(BS/LR) alone (only the ratio matters: the
  ratio test's null), same signal SD;
- ``none``: pure noise, no effect (every verdict's null).

Noise (total per-run variance the same, SD 0.4 points):

- ``independent``: every run its own draw;
- ``crossed``: a seed intercept, a seed x learning-rate effect (shared by a column of
  the grid), a seed x batch-size effect (shared by a row) and a run's own draw, a
  quarter of the variance each. Runs of one seed share an initialisation and a data
  order, so these are the effects to expect.

The training metrics (clean train loss and accuracy) are noise with the same structure
and no trend, so every premise warning about a trend in fit is a false positive.

Usage::

    python scripts/bench_calibration.py                 # the full table (minutes)
    python scripts/bench_calibration.py --quick         # the suite's reduced version
    python scripts/bench_calibration.py --grids demo --seeds 3 5 --reps-demo 200

``--quick`` exits 1 when a printed 95 % interval covers less than 0.85 in any scenario
(the suite runs it; tests/test_calibration.py).
"""

from __future__ import annotations

import argparse
import functools
import inspect
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kerasgen import analysis as A  # noqa: E402
from kerasgen.spec import preset  # noqa: E402

# --------------------------------------------------------------------------- scenarios

GRIDS = {
    "paper": (preset("paper").batch_sizes, preset("paper").learning_rates),
    "demo": (preset("demo").batch_sizes, preset("demo").learning_rates),
}
SIGNAL_SD = {"paper": 5.0, "demo": 1.0}  # the signal's SD across cells, in seed SDs
SEED_SD = 0.004  # 0.4 points of accuracy: a run's total noise SD
TRUTHS = ("surface", "ratio", "none")
NOISES = ("independent", "crossed")
SCENARIOS = (("surface", "independent"), ("surface", "crossed"), ("none", "independent"),
             ("none", "crossed"), ("ratio", "crossed"))
SEEDS = (1, 2, 3, 5, 10)
LEVEL = 0.95
COVERAGE_TARGET = (0.90, 0.99)
ALPHA = 0.005  # the paper's, the report's default
NOISE_TARGET = 0.10  # the noise floor's "above noise" (issue 21)


@dataclass(frozen=True)
class Scenario:
    grid: str
    seeds: int
    truth: str
    noise: str

    @property
    def label(self) -> str:
        return f"{self.grid}, {self.truth} + {self.noise} noise, {self.seeds} seed(s)"


def surface(grid: str, truth: str) -> np.ndarray:
    """mu(b, l), batch sizes x learning rates, in accuracy units (a fraction)."""
    bs, lr = (np.log2(np.asarray(v, float)) for v in GRIDS[grid])
    b, lg = np.meshgrid(bs, lr, indexing="ij")
    if truth == "none":
        return np.full(b.shape, 0.9)
    ratio = b - lg
    z = (ratio - ratio.mean()) / ratio.std()
    if truth == "ratio":
        shape = -z
    else:
        ub = (b - b.min()) / np.ptp(b)
        ul = (lg - lg.min()) / np.ptp(lg)
        bump = np.sin(np.pi * (1.6 * ub - 0.9 * ul + 0.2)) + 0.6 * np.cos(np.pi * 2.2 * ul)
        bump = (bump - bump.mean()) / bump.std()
        shape = -0.55 * z + 0.85 * bump
    shape = (shape - shape.mean()) / shape.std()
    return 0.9 + SIGNAL_SD[grid] * SEED_SD * shape


def draw_noise(rng: np.random.Generator, reps: int, shape: tuple[int, int], seeds: int,
               noise: str) -> np.ndarray:
    """reps x batch sizes x learning rates x seeds, total variance 1 per run."""
    nb, nl = shape
    if noise == "independent":
        return rng.standard_normal((reps, nb, nl, seeds))
    part = 0.5  # four parts of variance 1/4 each
    intercept = rng.standard_normal((reps, 1, 1, seeds))
    by_lr = rng.standard_normal((reps, 1, nl, seeds))
    by_bs = rng.standard_normal((reps, nb, 1, seeds))
    own = rng.standard_normal((reps, nb, nl, seeds))
    return part * (intercept + by_lr + by_bs + own)


def simulate(sc: Scenario, reps: int, rng: np.random.Generator) -> pd.DataFrame:
    """A results frame in the shape of ``load_results``: one grid per replicate (its
    ``dataset`` is ``r<i>``), every run done."""
    bss, lrs = GRIDS[sc.grid]
    mu = surface(sc.grid, sc.truth)
    nb, nl = mu.shape
    y = mu[None, :, :, None] + SEED_SD * draw_noise(rng, reps, mu.shape, sc.seeds, sc.noise)
    # The clean training metrics: noise of the same structure, no trend in the ratio.
    loss = 0.02 * np.exp(0.4 * draw_noise(rng, reps, mu.shape, sc.seeds, sc.noise))
    acc = 1.0 - 0.25 * loss
    r, b, c, s = np.meshgrid(np.arange(reps), np.arange(nb), np.arange(nl),
                             np.arange(sc.seeds), indexing="ij")
    bs = np.asarray(bss)[b.ravel()]
    lr = np.asarray(lrs, float)[c.ravel()]
    test = y.ravel()
    return pd.DataFrame({
        "study": "sim", "model": "sim", "dataset": np.char.add("r", r.ravel().astype(str)),
        "batch_size": bs, "learning_rate": lr, "seed": s.ravel(), "ratio": bs / lr,
        "status": "done", "best_metric": "test_accuracy",
        "test_accuracy": test, "best_test_accuracy": test,
        "final_test_accuracy": test, "test_loss": 2.0 * (1.0 - test),
        "train_eval_accuracy": acc.ravel(), "train_eval_loss": loss.ravel(),
    })


# --------------------------------------------------------------------------- the analyses


def _call(function, frame: pd.DataFrame, **kwargs):
    """Call a function of kerasgen.analysis with the keyword arguments it accepts (the
    harness runs against older code too)."""
    params = inspect.signature(function).parameters
    return function(frame, **{k: v for k, v in kwargs.items() if k in params})


INTERVALS = (  # (label, low, high, what it covers): the report's "95 % CI" columns
    ("CI", "ci_low", "ci_high", "scc"),
    ("CI over seeds", "seed_ci_low", "seed_ci_high", "scc"),  # before issue 21
    ("CI of the slope", "slope_low", "slope_high", "slope"),
)
MODEL_INTERVALS = (
    ("ratio model: beta_BS", "beta_bs_low", "beta_bs_high", "beta_bs"),
    ("ratio model: beta_LR", "beta_lr_low", "beta_lr_high", "beta_lr"),
    ("ratio model: beta_BS + beta_LR", "beta_sum_low", "beta_sum_high", "beta_sum"),
)
P_VERDICTS = (  # (label, column): "significant" when the column is below alpha
    ("p (the paper's: t approximation)", "p_value"),
    ("p (permutations; Table 3 rows x columns)", "p_perm"),
)


def truth_tests(sc: Scenario, resamples: int) -> pd.DataFrame:
    """The tests of the noise-free grid: rho(mu) and the Theil-Sen slope of mu (the
    "noise-free" information rows)."""
    return _truth_tests(sc.grid, sc.truth, resamples).copy()


@functools.lru_cache(maxsize=None)
def _truth_tests(grid: str, truth: str, resamples: int) -> pd.DataFrame:
    sc = Scenario(grid, 1, truth, "independent")
    one = sc
    frame = simulate(one, 1, np.random.default_rng(0))
    frame["test_accuracy"] = surface(sc.grid, sc.truth).ravel()
    frame["best_test_accuracy"] = frame["test_accuracy"]
    tests = _call(A.spearman_tests, frame, metric="test_accuracy", n_resamples=resamples,
                  intervals=True, permutations=9)
    out = tests[["table", "group_value", "scc"]].copy()
    slopes = []
    mu = surface(sc.grid, sc.truth)
    for x, index in _groups(sc.grid):
        slopes.append(_theil_sen_rows(np.log2(x), mu.ravel()[index][None, :])[0])
    out["slope"] = slopes
    out[["scc", "slope"]] = out[["scc", "slope"]].fillna(0.0)  # constant mu: no association
    return out


def _groups(grid: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(variable, flat cell indices) of every test, in the order spearman_tests returns
    them: Table 1 per learning rate, Table 2 per batch size, Table 3."""
    bss, lrs = (np.asarray(v, float) for v in GRIDS[grid])
    nb, nl = len(bss), len(lrs)
    flat = np.arange(nb * nl).reshape(nb, nl)
    out = [(bss, flat[:, j]) for j in range(nl)]
    out += [(lrs, flat[i, :]) for i in range(nb)]
    ratio = np.array([[A.round_sig(b / lr) for lr in lrs] for b in bss])
    out.append((ratio.ravel(), flat.ravel()))
    return out


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    rx = rankdata(x)
    rx = rx - rx.mean()
    ry = rankdata(y, axis=-1)
    ry = ry - ry.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ry @ rx) / np.sqrt((ry * ry).sum(axis=-1) * float(rx @ rx))


def _theil_sen_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The Theil-Sen slope of each row of y on x (median of the pairwise slopes over
    pairs with distinct x), in chunks of rows."""
    i, j = np.triu_indices(len(x), 1)
    keep = x[i] != x[j]
    i, j = i[keep], j[keep]
    out = []
    step = max(1, 2_000_000 // max(len(i), 1))
    for start in range(0, len(y), step):
        part = y[start:start + step]
        out.append(np.median((part[:, j] - part[:, i]) / (x[j] - x[i]), axis=-1))
    return np.concatenate(out)


def expected_tests(sc: Scenario, reps: int, rng: np.random.Generator) -> pd.DataFrame:
    """E[rho_k] and E[slope_k] of every test: the mean over ``reps`` fresh draws of the
    k seeds of the coefficient and the Theil-Sen slope of the cells' k-seed means."""
    mu = surface(sc.grid, sc.truth)
    rhos, slopes = [], []
    if sc.truth == "none":
        count = len(_groups(sc.grid))
        return pd.DataFrame({"scc": np.zeros(count), "slope": np.zeros(count)})
    means = (mu[None] + SEED_SD * draw_noise(rng, reps, mu.shape, sc.seeds, sc.noise)
             .mean(axis=-1)).reshape(reps, -1)
    for x, index in _groups(sc.grid):
        y = means[:, index]
        rhos.append(float(np.nanmean(_spearman_rows(x, y))))
        slopes.append(float(np.mean(_theil_sen_rows(np.log2(x), y[: min(reps, 300)]))))
    return pd.DataFrame({"scc": rhos, "slope": slopes})


def truth_model(sc: Scenario) -> dict[str, float]:
    """Least-squares fit of mu on log2(BS), log2(LR) over the grid's cells."""
    bss, lrs = GRIDS[sc.grid]
    b, lg = np.meshgrid(np.log2(bss), np.log2(lrs), indexing="ij")
    design = np.column_stack([np.ones(b.size), b.ravel(), lg.ravel()])
    coef, *_ = np.linalg.lstsq(design, surface(sc.grid, sc.truth).ravel(), rcond=None)
    return {"beta_bs": coef[1], "beta_lr": coef[2], "beta_sum": coef[1] + coef[2]}


def _key(frame: pd.DataFrame) -> pd.Series:
    return frame["table"].astype(str) + "|" + frame["group_value"].astype(str)


def _coverage(base: dict, label: str, table: int, low: pd.Series, high: pd.Series,
              true: pd.Series, tests: int, scale: float = 1.0) -> dict:
    lo, hi, true = (pd.to_numeric(v, errors="coerce").astype(float).to_numpy()
                    for v in (low, high, true))
    printed = np.isfinite(lo) & np.isfinite(hi)
    tol = 1e-9 * scale
    hit = (lo - tol <= true) & (true <= hi + tol)
    return {**base, "interval": label, "table": int(table), "tests": int(tests),
            "printed": int(printed.sum()),
            "coverage": float(hit[printed].mean()) if printed.any() else math.nan,
            "width": float(np.median((hi - lo)[printed])) if printed.any() else math.nan}


def evaluate(sc: Scenario, reps: int, rng: np.random.Generator, permutations: int,
             verdict_reps: int = 0, model_reps: int = 0, truth_reps: int = 1000,
             candidates: bool = False, verdicts: bool = True
             ) -> tuple[list[dict], list[dict]]:
    """(coverage rows, verdict rows) of one scenario."""
    frame = simulate(sc, reps, rng)
    kwargs = dict(metric="test_accuracy", alpha=ALPHA, permutations=permutations,
                  n_resamples=999)
    tests = _call(A.spearman_tests, frame, **kwargs)
    expected = expected_tests(sc, truth_reps, rng)
    free = truth_tests(sc, 9)
    per_grid = len(expected)
    # spearman_tests returns each grid's tests in the order of _groups.
    order = np.tile(np.arange(per_grid), reps)
    tests = tests.assign(
        true_scc=expected["scc"].to_numpy()[order],
        true_slope=expected["slope"].to_numpy()[order],
        free_scc=free["scc"].to_numpy()[order], free_slope=free["slope"].to_numpy()[order])
    coverage: list[dict] = []
    base = dict(grid=sc.grid, seeds=sc.seeds, truth=sc.truth, noise=sc.noise)
    tested = tests[tests["reason"].isna()]
    for label, low, high, what in INTERVALS:
        if low not in tests.columns:
            continue
        for table, part in tested.groupby("table"):
            coverage.append(_coverage(base, label, table, part[low], part[high],
                                      part[f"true_{what}"], len(part)))
            coverage.append(_coverage(base, f"{label} (noise-free truth)", table,
                                      part[low], part[high], part[f"free_{what}"], len(part)))
    if candidates:
        coverage += _candidates(sc, frame, tested, base)
    model = getattr(A, "ratio_model", None)
    models = None
    if model is not None and model_reps:
        sub = frame[frame["dataset"].isin([f"r{i}" for i in range(model_reps)])]
        models = _call(model, sub, metric="test_accuracy")
        true = truth_model(sc)
        scale = max(abs(true["beta_bs"]), abs(true["beta_lr"]), 1e-6)
        for label, low, high, what in MODEL_INTERVALS:
            coverage.append(_coverage(base, label, 0, models[low], models[high],
                                      pd.Series(true[what], index=models.index),
                                      len(models), scale))
    if not verdicts:
        return coverage, []
    verdicts = _verdicts(sc, frame, tests, models)  # type: ignore[assignment]
    if verdict_reps and sc.truth == "none":
        # More null grids for the rates of rare verdicts (p < 0.005): no intervals.
        extra = simulate(sc, verdict_reps, rng)
        more = _call(A.spearman_tests, extra, intervals=False, **kwargs)
        verdicts += _verdicts(sc, extra, more, None, only_tests=True)  # type: ignore
        verdicts = _pool(verdicts)  # type: ignore[arg-type,assignment]
    return coverage, verdicts  # type: ignore[return-value]


def _candidates(sc: Scenario, frame: pd.DataFrame, tested: pd.DataFrame, base: dict
                ) -> list[dict]:
    """Intervals the report does not print, on the same grids, to show why: the BCa
    bootstrap over cells and the percentile bootstrap over seeds (the report's before
    issue 21), the rows x columns bootstrap of Table 3 and Sen's slope interval."""
    from kerasgen import inference as I

    rows: dict[tuple[str, int], list] = {}
    bss, lrs = GRIDS[sc.grid]
    nb, nl = len(bss), len(lrs)
    values = frame["test_accuracy"].to_numpy().reshape(-1, nb * nl, sc.seeds)
    groups = _groups(sc.grid)
    for r in range(values.shape[0]):
        grid_tests = tested[tested["dataset"] == f"r{r}"]
        for g, (x, index) in enumerate(groups):
            table = 1 if g < nl else (2 if g < nl + nb else 3)
            row = grid_tests.iloc[g] if len(grid_tests) == len(groups) else None
            if row is None:
                continue
            true_scc, true_slope = float(row["true_scc"]), float(row["true_slope"])
            m = values[r][index]
            means = m.mean(axis=1)
            rng = I.make_rng((r, g))
            found = []
            if len(x) >= 8:
                found.append(("candidate: BCa over cells", I.cells_interval(
                    x, means, n_resamples=499, rng=rng), true_scc))
            if sc.seeds >= 2:
                found.append(("candidate: percentile over seeds", I.seeds_interval(
                    x, m, n_resamples=499, rng=rng), true_scc))
            if table == 3 and min(nb, nl) >= 3:
                found.append(("candidate: rows x columns bootstrap", I.grid_interval(
                    x.reshape(nb, nl), means.reshape(nb, nl), n_resamples=499, rng=rng,
                    method="percentile"), true_scc))
            slope = I.theil_sen(np.log2(x), means)
            found.append(("candidate: Sen's slope interval",
                          I.Interval(slope[1], slope[2], "sen"), true_slope))
            for label, ci, true in found:
                rows.setdefault((label, table), []).append((ci.low, ci.high, true))
    out = []
    for (label, table), items in rows.items():
        lo, hi, true = (pd.Series([it[i] for it in items]) for i in range(3))
        out.append(_coverage(base, label, table, lo, hi, true, len(items)))
    return out


def _pool(rows: list[dict]) -> list[dict]:
    """Add up verdict rows of the same verdict (main and extra replicates)."""
    out: dict[tuple, dict] = {}
    for row in rows:
        key = (row["verdict"], row["table"])
        if key in out:
            out[key]["n"] += row["n"]
            out[key]["hits"] += row["hits"]
        else:
            out[key] = dict(row)
    for row in out.values():
        row["rate"] = row["hits"] / row["n"] if row["n"] else math.nan
    return list(out.values())


def _verdicts(sc: Scenario, frame: pd.DataFrame, tests: pd.DataFrame, models,
              only_tests: bool = False) -> list[dict]:
    base = dict(grid=sc.grid, seeds=sc.seeds, truth=sc.truth, noise=sc.noise)
    rows: list[dict] = []

    def add(verdict: str, table: int, hits: int, n: int, nominal: float, target: float):
        rows.append({**base, "verdict": verdict, "table": table, "n": int(n),
                     "hits": int(hits), "rate": hits / n if n else math.nan,
                     "nominal": nominal, "target": target})

    if sc.truth == "none":
        for table, part in tests.groupby("table"):
            for label, column in P_VERDICTS:
                if column not in part.columns:
                    continue
                p = pd.to_numeric(part[column], errors="coerce").dropna()
                add(label, int(table), int((p < ALPHA).sum()), len(p), ALPHA, 1.2 * ALPHA)
            tested = part[part["reason"].isna()]
            add("significant (the report's verdict)", int(table),
                int(tested["significant"].astype(bool).sum()), len(tested), ALPHA,
                1.2 * ALPHA)
            if int(table) == 3:
                continue  # Table 3's family spans grids (here: replicates)
            for column, label in (("p_holm", "Holm: any in the family"),
                                  ("p_bh", "BH: any in the family"),
                                  ("p_by", "BY: any in the family")):
                if column not in part.columns:
                    continue
                fam = part.groupby("dataset")[column].apply(
                    lambda p: bool((pd.to_numeric(p, errors="coerce") < ALPHA).any()))
                add(label, int(table), int(fam.sum()), len(fam), ALPHA, 1.2 * ALPHA)
    if only_tests:
        return rows
    if sc.truth == "none" and sc.seeds >= 2:
        noise = _call(A.noise_floor, frame, metric="test_accuracy")
        if "above_noise" in noise.columns:
            hits = int(noise["above_noise"].astype(bool).sum())
        else:
            hits = int(noise["summary"].str.contains("stands well above").sum())
        nominal = float(getattr(A, "NOISE_ALPHA", math.nan))
        add("noise floor: above noise", 0, hits, len(noise), nominal, NOISE_TARGET)
    premise = _call(A.premise_check, frame, metric="test_accuracy")
    if "confound" in premise.columns:
        nominal = float(getattr(A, "PREMISE_ALPHA", 0.05))
        add("premise: the confound warning", 0, int(premise["confound"].astype(bool).sum()),
            len(premise), nominal, 1.2 * nominal)
        add("premise: any trend in fit (note or warning)", 0,
            int(premise["fit_trend"].astype(bool).sum()), len(premise), 2 * nominal,
            2.4 * nominal)
    else:
        # Before issue 21: a warning whose text names a trend with the ratio, tested at
        # the report's alpha with two criteria.
        hits = int(premise["warnings"].apply(
            lambda ws: any("with batch size / learning rate" in w for w in ws)).sum())
        add("premise: the confound warning", 0, hits, len(premise), ALPHA, 1.2 * ALPHA)
    if models is not None and len(models) and sc.truth in ("ratio", "none"):
        p = pd.to_numeric(models["p_ratio"], errors="coerce").dropna()
        add("ratio model: not only the ratio (p < 0.05)", 0, int((p < 0.05).sum()), len(p),
            0.05, 0.06)
    return rows


# --------------------------------------------------------------------------- the tables


def _flag_coverage(value: float, flag: bool = True) -> str:
    if not math.isfinite(value):
        return "—"
    low, high = COVERAGE_TARGET
    mark = "<" if value < low else (">" if value > high else " ")
    return f"{value:.2f}{mark if flag else ' '}"


def coverage_table(rows: pd.DataFrame) -> str:
    out = []
    for (grid, truth, noise), part in rows.groupby(["grid", "truth", "noise"], sort=False):
        seeds = sorted(part["seeds"].unique())
        out.append(f"\nCoverage of 95 % intervals, {grid} grid, {truth} + {noise} noise "
                   "(target 0.90-0.99, < or > outside it; — not printed; rows in "
                   "parentheses: information, no target)")
        head = f"  {'interval':<42}{'table':>6}" + "".join(f"{f'k={k}':>8}" for k in seeds)
        out.append(head)
        for (label, table), sub in part.groupby(["interval", "table"], sort=False):
            if not (sub["printed"] > 0).any():
                continue  # printed nowhere
            info = "noise-free" in label or "candidate" in label
            cells = []
            for k in seeds:
                hit = sub[sub["seeds"] == k]
                cells.append(_flag_coverage(float(hit["coverage"].iloc[0]), not info)
                             if len(hit) else "")
            name = "model" if table == 0 else f"T{table}"
            text = f"({label})" if info else label
            out.append(f"  {text:<42}{name:>6}" + "".join(f"{c:>8}" for c in cells))
    return "\n".join(out)


def verdict_table(rows: pd.DataFrame) -> str:
    out = []
    for (grid, truth, noise), part in rows.groupby(["grid", "truth", "noise"], sort=False):
        seeds = sorted(part["seeds"].unique())
        out.append(f"\nFalse-positive rate of verdicts, {grid} grid, {truth} + {noise} noise "
                   "(* above target)")
        head = (f"  {'verdict':<44}{'table':>6}{'nominal':>9}{'target':>8}"
                + "".join(f"{f'k={k}':>8}" for k in seeds))
        out.append(head)
        for (label, table), sub in part.groupby(["verdict", "table"], sort=False):
            nominal, target = float(sub["nominal"].iloc[0]), float(sub["target"].iloc[0])
            cells = []
            for k in seeds:
                hit = sub[sub["seeds"] == k]
                if not len(hit):
                    cells.append("")
                    continue
                rate = float(hit["rate"].iloc[0])
                cells.append(f"{rate:.3f}" + ("*" if rate > target else " ")
                             if math.isfinite(rate) else "—")
            name = "-" if table == 0 else f"T{table}"
            nom = f"{nominal:g}" if math.isfinite(nominal) else "—"
            out.append(f"  {label:<44}{name:>6}{nom:>9}{target:>8g}"
                       + "".join(f"{c:>8}" for c in cells))
    return "\n".join(out)


def run(scenarios: list[Scenario], args: argparse.Namespace, progress: bool = True
        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    coverage, verdicts = [], []
    rng = np.random.default_rng(args.seed)
    for sc in scenarios:
        start = time.perf_counter()
        c, v = evaluate(sc, getattr(args, f"reps_{sc.grid}"), rng, args.permutations,
                        getattr(args, f"verdict_reps_{sc.grid}"),
                        getattr(args, f"model_reps_{sc.grid}"),
                        getattr(args, f"truth_reps_{sc.grid}"), args.candidates,
                        not args.quick)
        coverage += c
        verdicts += v
        if progress:
            print(f"  {sc.label}: {time.perf_counter() - start:.1f} s", file=sys.stderr,
                  flush=True)
    return pd.DataFrame(coverage), pd.DataFrame(verdicts)


def scenarios_of(grids, seeds, models) -> list[Scenario]:
    return [Scenario(g, k, t, n) for g in grids for (t, n) in models for k in seeds]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="the suite's reduced version: demo grid, fewer replicates; "
                             "exit 1 when a printed 95 %% interval covers < 0.85")
    parser.add_argument("--grids", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--models", nargs="+", default=[f"{t}+{n}" for t, n in SCENARIOS],
                        help="truth+noise pairs (default: %(default)s)")
    parser.add_argument("--reps-paper", type=int, default=60, help="grids per scenario")
    parser.add_argument("--reps-demo", type=int, default=300)
    parser.add_argument("--verdict-reps-paper", type=int, default=240,
                        help="extra pure-noise paper grids for the rates of p < 0.005")
    parser.add_argument("--verdict-reps-demo", type=int, default=0)
    parser.add_argument("--model-reps-paper", type=int, default=24,
                        help="grids per scenario that the ratio model is fitted to")
    parser.add_argument("--model-reps-demo", type=int, default=300)
    parser.add_argument("--truth-reps-paper", type=int, default=400,
                        help="draws of the seeds behind E[rho_k]")
    parser.add_argument("--truth-reps-demo", type=int, default=2000)
    parser.add_argument("--permutations", type=int, default=999,
                        help="of the permutation p-values (Monte Carlo p keeps its level "
                             "at any number)")
    parser.add_argument("--candidates", action="store_true",
                        help="also measure intervals the report does not print")
    parser.add_argument("--one-seed-model", choices=("ols", "mixed"), default=None,
                        help="how the ratio model fits one seed (default: the report's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        # The intervals only (no verdicts): the demo grid, where intervals are printed
        # (three seeds and more; two seeds print none), under every noise model.
        args.grids, args.seeds = ["demo"], [2, 3, 5]
        args.models = ["surface+crossed", "none+crossed", "ratio+crossed",
                       "surface+independent"]
        args.reps_demo, args.verdict_reps_demo, args.model_reps_demo = 40, 0, 0
        args.truth_reps_demo, args.permutations = 600, 99
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.one_seed_model and hasattr(A, "RATIO_MODEL_ONE_SEED"):
        A.RATIO_MODEL_ONE_SEED = args.one_seed_model
    models = [tuple(m.split("+")) for m in args.models]
    scenarios = scenarios_of(args.grids, args.seeds, models)
    start = time.perf_counter()
    coverage, verdicts = run(scenarios, args)
    reps = {g: getattr(args, f"reps_{g}") for g in args.grids}
    print(f"kerasgen calibration harness: {len(scenarios)} scenarios; grids per scenario "
          f"{reps}; {args.permutations} permutations per Monte Carlo p; alpha {ALPHA:g}; "
          f"{time.perf_counter() - start:.0f} s")
    print(coverage_table(coverage))
    if len(verdicts):
        print(verdict_table(verdicts))
    claimed = coverage[(coverage["printed"] > 0)
                       & ~coverage["interval"].str.contains("noise-free|candidate")]
    worst = claimed.loc[claimed["coverage"].idxmin()] if len(claimed) else None
    if worst is not None:
        print(f"\nLowest coverage of a printed interval: {worst['coverage']:.2f} "
              f"({worst['interval']}, table {worst['table']}, {worst['grid']}, "
              f"{worst['truth']} + {worst['noise']}, {worst['seeds']} seed(s))")
    if args.quick and worst is not None and worst["coverage"] < 0.85:
        print("FAIL: a printed 95 % interval covers less than 0.85")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
