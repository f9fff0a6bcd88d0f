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
    epochs_total: int  # upper bound: cells x the study's epoch cap, minus what stopped early
    epochs_per_second: float
    eta_seconds: float | None
    running: list = field(default_factory=list)  # (worker, cell_id, bs, lr, epochs_done)
    # Running cells whose worker is lost: no heartbeat for longer than its stale limit, or
    # a dead process on this host (their packs are reclaimed by the next claim).
    lost: list = field(default_factory=list)

    @property
    def finished(self) -> int:
        """Cells whose numbers count: done or diverged (a failed cell is not finished)."""
        return self.counts[DONE] + self.counts[DIVERGED]

    @property
    def fraction(self) -> float:
        return self.epochs_done / self.epochs_total if self.epochs_total else 1.0


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def study_progress(db, now: datetime | None = None,
                   window_seconds: float = RATE_WINDOW_SECONDS) -> list[GroupProgress]:
    """Progress per (study, model, dataset), with the epoch rate over the last
    ``window_seconds`` and the ETA it implies."""
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
    rates = {(r[0], r[1], r[2]): (r[3], r[4]) for r in read["recent"]}
    running = read[RUNNING]
    groups: dict[tuple, GroupProgress] = {}
    for study, model, dataset, status, count, epochs in rows:
        key = (study, model, dataset)
        g = groups.get(key)
        if g is None:
            g = groups[key] = GroupProgress(study, model, dataset, 0, dict.fromkeys(STATUSES, 0),
                                            0, 0, 0.0, None)
        g.cells += count
        g.counts[status] = count
        g.epochs_done += int(epochs or 0)
        cap = int(caps.get(study) or 0)
        # Finished cells need no more epochs; unfinished ones need up to the cap.
        ended = status in FINISHED or status == FAILED
        g.epochs_total += int(epochs or 0) if ended else cap * count
    for study, model, dataset, worker, cell_id, bs, lr, done, heartbeat in running:
        g = groups[(study, model, dataset)]
        entry = (worker, cell_id, bs, lr, done)
        env = read["environments"].get(study, {}).get(f"worker {worker}", {})
        stale = float(env.get("stale_seconds") or DEFAULT_STALE_SECONDS)
        silent = (now - _parse(heartbeat)).total_seconds() if heartbeat else float("inf")
        (g.lost if silent > stale or worker_is_gone(worker) else g.running).append(entry)
    for key, g in groups.items():
        count, first = rates.get(key, (0, None))
        if count and first:
            span = max((now - _parse(first)).total_seconds(), 1.0)
            g.epochs_per_second = count / span
        remaining = max(g.epochs_total - g.epochs_done, 0)
        if remaining == 0:
            g.eta_seconds = 0.0
        elif g.epochs_per_second > 0:
            g.eta_seconds = remaining / g.epochs_per_second
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
