"""Progress of studies read from a store: counts, throughput, ETA, live workers.

Used by ``kerasgen status``, the progress display of ``kerasgen run`` and the dashboard.
No TensorFlow; read-only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from kerasgen.store import DEFAULT_STALE_SECONDS, connect_readonly, progress_rows, worker_is_gone
from kerasgen.vocabulary import DIVERGED, DONE, FAILED, FINISHED, RUNNING, STATUSES

RATE_WINDOW_SECONDS = 600.0


@dataclass
class GroupProgress:
    """One (study, model, dataset): the unit the dashboard shows a bar for."""

    study: str
    model: str
    dataset: str
    cells: int
    counts: dict
    epochs_done: int
    epochs_total: int  # epochs done + the estimate of those still to train (see below)
    epochs_per_second: float
    eta_seconds: float | None
    running: list = field(default_factory=list)  # (worker, cell_id, bs, lr, epochs_done)
    # Running cells whose worker is lost: no heartbeat for longer than its stale limit, or
    # a dead process on this host (their packs are reclaimed by the next claim).
    lost: list = field(default_factory=list)
    cap: int = 0  # the study's epoch cap (0: none recorded)
    stop_rule: str = "epochs"  # the study's stop rule (spec.stop.rule)
    # Epochs one unfinished cell is expected to train in all: the cap under the
    # "epochs" rule; under another rule, the mean of the finished cells of this grid (the
    # cap while none has finished).
    expected_epochs: float = 0.0
    epochs_remaining: float = 0.0  # the estimate of the epochs still to train
    window_epochs: int = 0  # epochs recorded in the rate window
    window_seconds: float = 0.0  # from the first of them to now

    @property
    def finished(self) -> int:
        """Cells whose numbers count: done or diverged (a failed cell is not finished)."""
        return self.counts[DONE] + self.counts[DIVERGED]

    @property
    def ended(self) -> int:
        """Cells that will train no more: finished or failed."""
        return self.finished + self.counts[FAILED]

    @property
    def fraction(self) -> float:
        """Progress in cells: the share that will train no more."""
        return self.ended / self.cells if self.cells else 1.0

    @property
    def estimated(self) -> bool:
        """Whether ``epochs_total`` is an estimate (a stop rule ends cells early)."""
        return self.stop_rule != "epochs" and self.ended < self.cells


@dataclass(frozen=True)
class StudyEstimate:
    """The progress of several groups (a study) as one: cells, epochs and one ETA, the
    epochs still to train at the rate of the whole study (every group's epochs in the
    rate window, over the time since the first of them)."""

    cells: int
    finished: int
    ended: int
    running: int
    diverged: int
    failed: int
    epochs_done: int
    epochs_total: float  # done + remaining (an estimate under a stop rule)
    epochs_remaining: float
    epochs_per_second: float
    eta_seconds: float | None  # 0 when nothing is left; None without a rate
    estimated: bool  # a stop rule: the epochs still to train are estimated

    @property
    def fraction(self) -> float:
        return self.ended / self.cells if self.cells else 1.0

    def epochs_text(self) -> str:
        """``412/960 epochs``, ``412/≈960 epochs`` under a stop rule."""
        return f"{self.epochs_done}/{'≈' if self.estimated else ''}" \
               f"{int(round(self.epochs_total))} epochs"


def estimate(groups: list[GroupProgress]) -> StudyEstimate:
    """One estimate for ``groups`` (the CLI's progress lines, ``kerasgen status`` and
    the dashboard all use this one): the epochs still to train (each group's estimate,
    see :class:`GroupProgress`) at the rate of all of them together. A group that has
    not started has no rate of its own; its epochs count all the same."""
    remaining = sum(g.epochs_remaining for g in groups)
    epochs = sum(g.window_epochs for g in groups)
    span = max((g.window_seconds for g in groups if g.window_epochs), default=0.0)
    rate = epochs / span if epochs and span > 0 else 0.0
    if remaining <= 0:
        eta = 0.0 if groups else None
    else:
        eta = remaining / rate if rate > 0 else None
    done = sum(g.epochs_done for g in groups)
    return StudyEstimate(
        cells=sum(g.cells for g in groups), finished=sum(g.finished for g in groups),
        ended=sum(g.ended for g in groups), running=sum(g.counts[RUNNING] for g in groups),
        diverged=sum(g.counts[DIVERGED] for g in groups),
        failed=sum(g.counts[FAILED] for g in groups), epochs_done=done,
        epochs_total=done + remaining, epochs_remaining=remaining, epochs_per_second=rate,
        eta_seconds=eta, estimated=any(g.estimated for g in groups))


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def study_progress(db, now: datetime | None = None,
                   window_seconds: float = RATE_WINDOW_SECONDS) -> list[GroupProgress]:
    """Progress per (study, model, dataset), with the epoch rate over the last
    ``window_seconds`` and the ETA it implies (:func:`estimate` puts groups together)."""
    own = not hasattr(db, "execute")
    conn = connect_readonly(db) if own else db
    try:
        now = now or datetime.now(timezone.utc)
        since = (now - timedelta(seconds=window_seconds)).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
        read = progress_rows(conn, since)
    finally:
        if own:
            conn.close()
    caps, rows = read["caps"], read["counts"]
    stops = read.get("stops", {})
    rates = {(r[0], r[1], r[2]): (r[3], r[4]) for r in read["recent"]}
    running = read[RUNNING]
    groups: dict[tuple, GroupProgress] = {}
    pending: dict[tuple, tuple[int, int]] = {}  # group -> (cells, epochs) neither ended nor running
    for study, model, dataset, status, count, epochs in rows:
        key = (study, model, dataset)
        g = groups.get(key)
        if g is None:
            g = groups[key] = GroupProgress(study, model, dataset, 0, dict.fromkeys(STATUSES, 0),
                                            0, 0, 0.0, None, cap=int(caps.get(study) or 0),
                                            stop_rule=stops.get(study, "epochs"))
        g.cells += count
        g.counts[status] = count
        g.epochs_done += int(epochs or 0)
        if status not in FINISHED and status != FAILED and status != RUNNING:
            cells, done = pending.get(key, (0, 0))
            pending[key] = (cells + count, done + int(epochs or 0))
    finished_epochs = {}
    for study, model, dataset, status, count, epochs in rows:
        if status in FINISHED:
            n, total = finished_epochs.get((study, model, dataset), (0, 0))
            finished_epochs[(study, model, dataset)] = (n + count, total + int(epochs or 0))
    for key, g in groups.items():
        n, total = finished_epochs.get(key, (0, 0))
        if g.stop_rule != "epochs" and n:
            g.expected_epochs = total / n
            if g.cap:
                g.expected_epochs = min(g.expected_epochs, g.cap)
        else:
            g.expected_epochs = float(g.cap)
        cells, done = pending.get(key, (0, 0))
        g.epochs_remaining = max(cells * g.expected_epochs - done, 0.0)
    for study, model, dataset, worker, cell_id, bs, lr, done, heartbeat in running:
        g = groups[(study, model, dataset)]
        entry = (worker, cell_id, bs, lr, done)
        env = read["environments"].get(study, {}).get(f"worker {worker}", {})
        stale = float(env.get("stale_seconds") or DEFAULT_STALE_SECONDS)
        silent = (now - _parse(heartbeat)).total_seconds() if heartbeat else float("inf")
        (g.lost if silent > stale or worker_is_gone(worker) else g.running).append(entry)
        # A running cell trains to the expected count (at least one more epoch, at most
        # to the cap).
        left = max(g.expected_epochs - int(done or 0), 1.0)
        if g.cap:
            left = min(left, max(g.cap - int(done or 0), 0))
        g.epochs_remaining += left
    for key, g in groups.items():
        g.epochs_total = g.epochs_done + int(round(g.epochs_remaining))
        count, first = rates.get(key, (0, None))
        if count and first:
            span = max((now - _parse(first)).total_seconds(), 1.0)
            g.window_epochs, g.window_seconds = int(count), span
            g.epochs_per_second = count / span
        if g.epochs_remaining <= 0:
            g.eta_seconds = 0.0
        elif g.epochs_per_second > 0:
            g.eta_seconds = g.epochs_remaining / g.epochs_per_second
    return [groups[k] for k in sorted(groups)]


def workers_alive(groups: list[GroupProgress]) -> list[str]:
    return sorted({w for g in groups for (w, *_rest) in g.running if w})


def workers_lost(groups: list[GroupProgress]) -> list[str]:
    """Workers that hold running cells but are lost (see ``GroupProgress.lost``)."""
    return sorted({w for g in groups for (w, *_rest) in g.lost if w})


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"
