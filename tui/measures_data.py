"""The Measures screen's data: the ranking of ``kerasgen.measures.rank`` for one grid,
as plain values (no Textual, no pandas in what it returns).

Recomputed only when the store changed in a way that moves it: a measure arrived
(``kerasgen measures`` writes a run's measures in one transaction) or a run finished;
the screen on display says which grid it wants (``wanted``), so nothing else is
computed. On the demo's store a grid's ranking takes about a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GroupKey = tuple[str, str, str]


def _num(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class MeasureRow:
    rank: int | None
    measure: str
    label: str
    family: str
    psi: float | None
    psi_batch_size: float | None
    psi_learning_rate: float | None
    psi_seed: float | None
    tau: float | None
    tau_interval: tuple[float, float] | None
    seed_range: tuple[float, float] | None
    partial: float | None
    partial_p: float | None
    cmi: float | None
    agrees: bool | None
    n_runs: int
    reason: str | None


@dataclass(frozen=True)
class MeasuresView:
    """One grid's ranking: rows best first, the verdict sentence, how much is measured."""

    key: GroupKey
    rows: tuple[MeasureRow, ...]
    verdict: str
    runs_finished: int
    runs_measured: int
    stored: int  # rows of the measures table for this grid
    error: str | None = None


def build_measures_view(conn, key: GroupKey, alpha: float = 0.05) -> MeasuresView:
    """The ranking of the grid ``key`` from an open (read-only) connection."""
    from kerasgen.measures import rank as R

    study, model, dataset = key
    frame = R.measure_frame(conn, study=study)
    frame = frame[(frame["model"] == model) & (frame["dataset"] == dataset)]
    finished = int(frame["cell_id"].nunique())
    network = frame[frame["source"] == "network"]
    if frame.empty:
        return MeasuresView(key, (), "No finished run yet.", 0, 0, 0)
    ranking = R.rank_measures(frame)
    rows = []
    for r in ranking.itertuples():
        low, high = _num(r.tau_low), _num(r.tau_high)
        smin, smax = _num(r.seed_tau_min), _num(r.seed_tau_max)
        rows.append(MeasureRow(
            rank=None if _num(r.rank) is None else int(r.rank), measure=str(r.measure),
            label=str(r.label), family=str(r.family), psi=_num(r.psi),
            psi_batch_size=_num(r.psi_batch_size), psi_learning_rate=_num(r.psi_learning_rate),
            psi_seed=_num(r.psi_seed), tau=_num(r.tau),
            tau_interval=(low, high) if low is not None and high is not None else None,
            seed_range=(smin, smax) if smin is not None and smax is not None else None,
            partial=_num(r.partial), partial_p=_num(r.partial_p), cmi=_num(r.cmi),
            agrees=None if r.agrees is None else bool(r.agrees), n_runs=int(r.n_runs),
            reason=None if not isinstance(r.reason, str) else r.reason))
    return MeasuresView(key, tuple(rows), R.verdict(ranking, study, model, dataset, alpha),
                        finished, int(network["cell_id"].nunique()), int(len(network)))


class MeasuresReader:
    """Keeps the wanted grid's view current: recomputes it when ``signature`` (the
    measures table's and the finished runs') changed since it was computed."""

    def __init__(self) -> None:
        self._views: dict[GroupKey, tuple[tuple, MeasuresView]] = {}

    def reset(self) -> None:
        self._views.clear()

    def update(self, conn, wanted: GroupKey | None, signature: tuple) -> dict:
        if wanted is not None:
            cached = self._views.get(wanted)
            if cached is None or cached[0] != signature:
                try:
                    view = build_measures_view(conn, wanted)
                except Exception as exc:  # noqa: BLE001 - shown on screen, not fatal
                    view = MeasuresView(wanted, (), "", 0, 0, 0,
                                        error=f"{type(exc).__name__}: {exc}")
                self._views[wanted] = (signature, view)
        return {key: view for key, (sig, view) in self._views.items() if sig == signature}


__all__ = ["MeasureRow", "MeasuresReader", "MeasuresView", "build_measures_view"]
