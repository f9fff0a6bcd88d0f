"""Progress of studies read from a store: counts, throughput, ETA, live workers.

Used by ``kerasgen status``, the progress display of ``kerasgen run`` and the dashboard.
No TensorFlow; read-only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from kerasgen.store import STATUSES, connect_readonly

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

    @property
    def finished(self) -> int:
        """Cells whose numbers count: done or diverged (a failed cell is not finished)."""
        return self.counts["done"] + self.counts["diverged"]

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
        caps = {name: json.loads(spec).get("epochs", 0)
                for name, spec in conn.execute("SELECT name, spec_json FROM studies")}
        rows = conn.execute(
            "SELECT s.name, c.model, c.dataset, c.status, COUNT(*), SUM(c.epochs_done) "
            "FROM cells c JOIN studies s USING (study_id) "
            "GROUP BY s.name, c.model, c.dataset, c.status").fetchall()
        rates = dict(((r[0], r[1], r[2]), (r[3], r[4])) for r in conn.execute(
            "SELECT s.name, c.model, c.dataset, COUNT(*), MIN(e.recorded_at) "
            "FROM epochs e JOIN cells c USING (cell_id) JOIN studies s USING (study_id) "
            "WHERE e.recorded_at > ? GROUP BY s.name, c.model, c.dataset", (since,)))
        running = conn.execute(
            "SELECT s.name, c.model, c.dataset, c.worker, c.cell_id, c.batch_size, "
            "c.learning_rate, c.epochs_done FROM cells c JOIN studies s USING (study_id) "
            "WHERE c.status = 'running' ORDER BY c.worker, c.learning_rate").fetchall()
    finally:
        if own:
            conn.close()
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
        g.epochs_total += int(epochs or 0) if status in ("done", "diverged", "failed") else cap * count
    for study, model, dataset, worker, cell_id, bs, lr, done in running:
        groups[(study, model, dataset)].running.append((worker, cell_id, bs, lr, done))
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
