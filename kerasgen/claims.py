"""The claim loop: claim a study's packs and train them until none is left. One loop for a
worker on this machine (it trains each claim itself) and for the Ray driver (it submits
each claim as a task), so both settle every outcome the same way.

A *runner* starts the training of a claim and later reports how it ended:

- ``slots``: how many claims it trains at once (a local worker: 1);
- ``start(claim)``: begin training it;
- ``in_flight()``: the claims started and not yet reported;
- ``finished(timeout)``: ``[(claim, outcome), ...]`` for those that ended: a summary
  dict, or the exception they raised;
- ``retries``: True when the runner already retried a failed claim (Ray retries a task up
  to ``max_attempts`` times), so a failure it reports is final;
- ``vouches``: True when the loop's process must keep the claims' heartbeats (the Ray
  driver does for its tasks; a local training thread beats for itself).

How an outcome is settled (``settle``):

- a summary: trained;
- ``ClaimLost``: another worker owns the pack now; nothing of ours to release. When the
  claim's own token still holds its cells, the loss came from this worker's own logic: a
  bug, surfaced as ``ClaimError`` (the cells are given back first), never a silent wait;
- ``DiskFull`` (or a summary saying ``paused``): released without counting a failure; the
  loop waits ``DISK_FULL_WAIT_SECONDS`` and goes on;
- ``KeyboardInterrupt``: released without counting a failure, then raised;
- any other exception: released for a retry (resumed from its checkpoint), or marked
  ``failed`` with the error once it has failed ``max_attempts`` times; the study goes on.
"""

from __future__ import annotations

import sys
import time
import traceback

from kerasgen.checkpoints import DiskFull
from kerasgen.options import RunOptions
from kerasgen.settings import SettingsMismatch
from kerasgen.store import ClaimLost, Store
from kerasgen.vocabulary import FAILED, RUNNING


class ClaimError(RuntimeError):
    """A worker's own bookkeeping of a claim went wrong (a bug, not another worker taking
    the pack): the run stops, naming the pack, instead of waiting for it forever."""


DISK_FULL_WAIT_SECONDS = 60.0
"""How long the loop waits after a full disk before it claims again."""


def run_claims(store: Store, study_id: int, worker: str, options: RunOptions, runner,
               device: str | None = None, on_pack=None, on_round=None) -> int:
    """Claim and train packs of the study until none is pending or running elsewhere;
    returns how many this loop trained. ``on_pack(summary)`` after each trained pack,
    ``on_round()`` once per round (tests watch the Ray driver with it)."""
    trained = 0
    while True:
        # Claim only what can start now: a claim queued behind others would get no
        # heartbeat and look abandoned.
        while len(runner.in_flight()) < runner.slots:
            claim = store.claim_pack(study_id, worker, options.pack_size, options.stale_seconds,
                                     device=device)
            if claim is None:
                break
            runner.start(claim)
        if runner.vouches:
            for claim in runner.in_flight():
                try:
                    store.heartbeat(claim)
                except ClaimLost:
                    pass
        if on_round is not None:
            on_round()
        if not runner.in_flight():
            if store.counts(study_id)[RUNNING] == 0:
                return trained
            # Cells recorded as running under this very loop's name that it is not
            # training (a bug, or a SQLiteLogger fit of this process that raised) would be
            # waited for forever: give them back at once.
            if store.release_orphans(study_id, worker):
                continue
            # Others are training; wait, in case one dies and its pack needs us.
            time.sleep(min(5.0, options.heartbeat_interval))
            continue
        for claim, outcome in runner.finished(timeout=5.0):
            if settle(store, claim, outcome, options, final=runner.retries):
                trained += 1
                if on_pack is not None:
                    on_pack(outcome)


def settle(store: Store, claim, outcome, options: RunOptions, final: bool = False) -> bool:
    """Record how a claim's training ended (see the module docstring); True if trained.
    ``final``: the runner has already retried it as often as allowed."""
    first = claim.cells[0]
    where = f"pack {claim.pack_id} ({first['model']}, batch {first['batch_size']})"
    paused = outcome.get("paused") if isinstance(outcome, dict) else None
    refused = outcome.get("refused") if isinstance(outcome, dict) else None
    if refused:
        store.release(claim, f"refused: {refused}", count_failure=False)
        raise SettingsMismatch(refused)
    if isinstance(outcome, DiskFull) or paused:
        store.release(claim, f"paused: {paused or outcome}", count_failure=False)
        print(f"kerasgen: {paused or outcome}. {where[0].upper()}{where[1:]} is paused, not "
              f"failed; trying again in {DISK_FULL_WAIT_SECONDS:g} s (free space, or stop and "
              "run the same command later).", file=sys.stderr, flush=True)
        time.sleep(DISK_FULL_WAIT_SECONDS)
        return False
    if isinstance(outcome, ClaimLost):
        if claim.token not in store.pack_owners(claim):
            return False  # another worker owns the pack now: nothing of ours to release
        # Our own claim still holds cells that our own training called lost: a bug in
        # the resume logic. Give them back (they resume from the checkpoint) and stop.
        store.release(claim, f"internal error: {outcome}", count_failure=False)
        raise ClaimError(f"{where} lost its own claim ({outcome}); its cells were given "
                         "back and resume from their checkpoint on the next run. This is a "
                         "bug in kerasgen: please report it with this message.") from outcome
    if isinstance(outcome, SettingsMismatch):  # a changed network, other kernels: stop
        store.release(claim, f"refused: {outcome}", count_failure=False)
        raise outcome
    if isinstance(outcome, KeyboardInterrupt):
        store.release(claim, "interrupted (KeyboardInterrupt)", count_failure=False)
        raise outcome
    if isinstance(outcome, BaseException):
        error = "".join(traceback.format_exception_only(type(outcome), outcome)).strip()
        detail = "".join(traceback.format_exception(type(outcome), outcome,
                                                    outcome.__traceback__))
        status = store.release(claim, f"{error}\n{detail}",
                               1 if final else options.max_attempts)
        print(f"kerasgen: {where} raised {error}; "
              f"{'marked failed' if status == FAILED else 'released for a retry'}.",
              file=sys.stderr, flush=True)
        return False
    return True


class LocalRunner:
    """Trains each claim in this process, one at a time (``train(claim)``)."""

    slots = 1
    retries = False
    vouches = False

    def __init__(self, train):
        self.train = train
        self._done: list[tuple] = []
        self._current = None

    def start(self, claim) -> None:
        self._current = claim
        try:
            outcome = self.train(claim)
        except (Exception, KeyboardInterrupt) as exc:  # settled by the loop
            outcome = exc
        self._done.append((claim, outcome))

    def in_flight(self) -> list:
        return [claim for claim, _ in self._done]

    def finished(self, timeout: float = 0.0) -> list[tuple]:
        done, self._done = self._done, []
        return done


__all__ = ["ClaimError", "DISK_FULL_WAIT_SECONDS", "LocalRunner", "run_claims", "settle"]
