"""Running a study on a Ray cluster: ``kerasgen run ... --backend ray [--address ADDR]``.

- Each pack is a Ray task with a resource requirement (one GPU per pack where the
  cluster has GPUs, ``--cpus-per-pack`` CPUs otherwise).
- The store stays one SQLite file on the driver's machine. A single ``StoreWriter``
  actor, pinned to the driver's node, owns it: tasks send it their epochs, status
  changes and heartbeats as they happen (so ``kerasgen status`` and the dashboard stay
  live) and never open the file themselves.
- Checkpoints go to ``--checkpoint-dir``, which every node must reach (a shared file
  system; on a single-node cluster the default next to the store is fine). A task whose
  worker dies is retried by Ray and resumes its pack from the last checkpoint; retries
  are bounded (``--max-attempts``), and a pack that keeps failing is marked ``failed``
  with the error while the study goes on.
- The driver can be stopped and started again: it reattaches to the store (the same
  study), and only unfinished packs are submitted; packs left ``running`` by a dead
  driver are reclaimed at once (their owner process is gone) and resumed.

Ray is optional: ``pip install 'kerasgen[ray]'``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from pathlib import Path

from kerasgen import runtime
from kerasgen.checkpoints import DiskFull
from kerasgen.claims import run_claims
from kerasgen.options import RunOptions
from kerasgen.spec import Spec, from_dict
from kerasgen.store import Claim, ClaimLost, Store
from kerasgen.vocabulary import DONE

RAY_MISSING = ("The Ray backend needs Ray, which is not installed. Install it with "
               "`pip install 'kerasgen[ray]'` (or `pip install 'ray[default]'`), or run "
               "without --backend ray.")


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        from kerasgen.worker import StudyError

        raise StudyError(RAY_MISSING) from exc
    return ray


class StoreWriter:
    """The only process that writes the SQLite file (a Ray actor on the driver's node).

    Its methods mirror the ``Store`` calls a trainer makes; each returns only after the
    write is committed, so a task's "checkpoint, then commit" order holds across
    processes and machines.
    """

    def __init__(self, db_path: str):
        self.store = Store(db_path)
        self.pids: dict[str, int] = {}

    def cell(self, cell_id: int) -> dict:
        return self.store.cell(cell_id)

    def record_epoch(self, cell_id, epoch, logs, wall_seconds=None, claim=None,
                     pack_cells=None, replay=True) -> bool:
        return self.store.record_epoch(cell_id, epoch, logs, wall_seconds, claim=claim,
                                       pack_cells=pack_cells, replay=replay)

    def finish_cell(self, cell_id, status=DONE, diverged_epoch=None, error=None, claim=None):
        self.store.finish_cell(cell_id, status, diverged_epoch=diverged_epoch, error=error,
                               claim=claim)

    def heartbeat(self, claim: Claim) -> None:
        self.store.heartbeat(claim)

    def study_environment(self, study_id: int) -> dict:
        return self.store.study_environment(study_id)

    def update_study_environment(self, study_id: int, **fields) -> None:
        self.store.update_study_environment(study_id, **fields)

    def check_claim(self, claim: Claim) -> None:
        self.store.check_claim(claim)

    def report_pid(self, pack_id: str, pid: int) -> None:
        """Tasks say which process trains them (tests kill it; operators find it)."""
        self.pids[pack_id] = pid

    def running_packs(self) -> dict[str, tuple[int | None, int]]:
        """Packs in training now: pack id -> (pid of its task, fewest epochs done)."""
        return {pack: (self.pids.get(pack), done)
                for pack, done in self.store.running_packs().items()}


class RemoteStore:
    """What ``train_pack`` needs of a store, forwarded to the ``StoreWriter`` actor."""

    def __init__(self, writer, path: str):
        self.writer = writer
        self.path = Path(path)

    def _call(self, method, *args, **kwargs):
        import ray

        try:
            return ray.get(getattr(self.writer, method).remote(*args, **kwargs))
        except ray.exceptions.RayTaskError as exc:
            cause = exc.as_instanceof_cause()
            if isinstance(cause, ClaimLost):
                raise ClaimLost(str(cause)) from None
            raise

    def cell(self, cell_id):
        return self._call("cell", cell_id)

    def record_epoch(self, cell_id, epoch, logs, wall_seconds=None, claim=None,
                     pack_cells=None, replay=True):
        return self._call("record_epoch", cell_id, epoch, logs, wall_seconds, claim=claim,
                          pack_cells=pack_cells, replay=replay)

    def finish_cell(self, cell_id, status=DONE, diverged_epoch=None, error=None, claim=None):
        return self._call("finish_cell", cell_id, status, diverged_epoch=diverged_epoch,
                          error=error, claim=claim)

    def check_claim(self, claim: Claim) -> None:
        return self._call("check_claim", claim)

    def study_environment(self, study_id: int) -> dict:
        return self._call("study_environment", study_id)

    def update_study_environment(self, study_id: int, **fields) -> None:
        return self._call("update_study_environment", study_id, **fields)

    def heartbeat_sender(self, claim: Claim):
        return (lambda: self._call("heartbeat", claim)), (lambda: None)


_RECORDED: set = set()
"""(store, study) pairs whose environment this Ray worker process has recorded."""
_VERIFIED: set = set()
"""Networks of your own this Ray worker process has checked against the study's record."""


def _train_pack_task(writer, db_path: str, spec_dict: dict, claim: Claim, options_dict: dict,
                     study_id: int):
    """A Ray task: train (or resume) one pack, talking to the store through ``writer``.

    The first task of each Ray worker process records how the process trains (the same
    ``worker_environment`` a local worker records, under ``ray:<host>:<pid>``) and is
    refused, returning ``{"refused": ...}``, when those kernel settings differ from the
    study's earlier runs (see ``kerasgen.worker.record_worker``)."""
    runtime.set_keras_backend(options_dict.get("keras_backend"))
    runtime.set_onednn(options_dict.get("onednn"))
    runtime.quiet_tensorflow()
    import ray

    problems = runtime.unhonoured_settings(options_dict.get("onednn"),
                                           options_dict.get("keras_backend"))
    if problems:  # a Ray worker process reused after another study's tasks
        return {"pack_id": claim.pack_id, "refused": "; ".join(problems)}
    from kerasgen.train import prepare_dataset, train_pack
    from kerasgen.worker import (
        SettingsMismatch,
        record_worker,
        verify_network,
        worker_environment,
    )

    spec = from_dict(spec_dict)
    options = RunOptions(**options_dict)
    store = RemoteStore(writer, db_path)
    if (db_path, study_id) not in _RECORDED:
        try:
            record_worker(store, study_id, f"ray:{runtime.worker_name()}",
                          worker_environment(options), options)
        except SettingsMismatch as exc:  # the driver stops the study: no retry, no failure
            return {"pack_id": claim.pack_id, "refused": str(exc)}
        _RECORDED.add((db_path, study_id))
    ray.get(writer.report_pid.remote(claim.pack_id, os.getpid()))
    ds = prepare_dataset(claim.cells[0]["dataset"], options, spec.training.dtype)
    try:
        verify_network(store, study_id, spec, claim.cells[0]["model"], ds, _VERIFIED)
    except SettingsMismatch as exc:
        return {"pack_id": claim.pack_id, "refused": str(exc)}
    try:
        return train_pack(store, claim, spec, ds, options)
    except DiskFull as exc:  # not the pack's fault: no Ray retry, no failure counted
        return {"pack_id": claim.pack_id, "paused": str(exc)}


class RayRunner:
    """The claim loop's runner for Ray (see ``kerasgen.claims``): each claim a task. Ray
    retries a task whose worker dies or that raises, up to ``--max-attempts`` in all, so a
    failure it reports is final; the driver vouches for its tasks' claims (heartbeats)."""

    retries = True
    vouches = True

    def __init__(self, ray, submit, slots: int):
        self.ray, self.submit, self.slots = ray, submit, slots
        self.pending: dict = {}  # object ref -> claim

    def start(self, claim) -> None:
        self.pending[self.submit(claim)] = claim

    def in_flight(self) -> list:
        return list(self.pending.values())

    def finished(self, timeout: float = 5.0) -> list[tuple]:
        ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=timeout)
        done = []
        for ref in ready:
            claim = self.pending.pop(ref)
            try:
                done.append((claim, self.ray.get(ref)))
            except Exception as exc:  # noqa: BLE001 - retries exhausted: settled as failed
                done.append((claim, exc))
        return done


def _task_slots(resources: dict, cpus_per_pack: float, gpus_per_pack: float) -> int:
    """How many packs the cluster can train at once."""
    slots = []
    if cpus_per_pack > 0:
        slots.append(int(resources.get("CPU", 0) // cpus_per_pack))
    if gpus_per_pack > 0:
        slots.append(int(resources.get("GPU", 0) // gpus_per_pack))
    return max(min(slots) if slots else 1, 1)


def _check_pack_resources(ray, cpus_per_pack: float, gpus_per_pack: float) -> None:
    """A pack must fit on one node of the cluster; otherwise Ray would wait forever."""
    from kerasgen.worker import StudyError

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    for name, need in (("CPU", cpus_per_pack), ("GPU", gpus_per_pack)):
        most = max((float(r.get(name, 0)) for r in nodes), default=0.0)
        if need > most:
            flag = "--cpus-per-pack" if name == "CPU" else "--gpus-per-pack"
            raise StudyError(f"{flag} {need:g}: no node of the Ray cluster has that many "
                             f"{name}s (the largest has {most:g}); lower it.")


def run_study_ray(spec: Spec, db, options: RunOptions | None = None, address: str | None = None,
                  cpus_per_pack: float = 1.0, gpus_per_pack: float | None = None,
                  progress: bool | str = "auto", retry_failed: bool = False,
                  num_cpus: int | None = None, on_submitted=None, force: bool = False,
                  extend: bool = False) -> dict:
    """Train every cell of ``spec`` on a Ray cluster; the store stays at ``db`` here.

    ``address``: an existing cluster ("auto", "ray://host:10001", "host:6379"); None
    starts a local one (``num_cpus`` CPUs). Returns the counts by status. What can be
    checked before a pack is claimed is (the grid, the checkpoint directory, the data
    sets, that a pack's CPUs and GPUs fit on a node).
    """
    ray = _import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from kerasgen.checkpoints import clean_finished_packs
    from kerasgen.worker import check_before_claiming, check_disk, register_study, report_cleaning

    options = options or RunOptions()
    if force and not options.allow_mixed_settings:
        options = replace(options, allow_mixed_settings=True)
    db = Path(db).resolve()
    if options.checkpoint_dir is None:
        options.checkpoint_dir = str(Path(str(db) + ".checkpoints"))
    checked = check_before_claiming(spec, db, options, force=force, disk=False)
    options = replace(options, keras_backend=checked.keras_backend)
    local = [m for m in spec.models
             if spec.model(m).kind == "registered" and spec.model(m).target is None]
    if local:
        from kerasgen.worker import StudyError

        raise StudyError(f"model {local[0]!r} is registered from a function a Ray worker "
                         "cannot import (defined in a script's __main__): define it at module "
                         "level in an importable module.")

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, num_cpus=num_cpus if address is None else None,
                 include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                 ignore_reinit_error=True)
    monitor = None
    try:
        if gpus_per_pack is None:
            gpus_per_pack = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        _check_pack_resources(ray, cpus_per_pack, gpus_per_pack)
        check_disk(spec, db, options, _task_slots(ray.cluster_resources(), cpus_per_pack,
                                                  gpus_per_pack), force, checked.measured)
        study_id = register_study(spec, db, options, retry_failed, checked.networks, extend)
        here = ray.get_runtime_context().get_node_id()
        writer = ray.remote(num_cpus=0)(StoreWriter).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
            max_concurrency=16,
        ).remote(str(db))
        task = ray.remote(_train_pack_task).options(
            num_cpus=cpus_per_pack, num_gpus=gpus_per_pack,
            # A dead worker process is retried (and resumes from its checkpoint); an
            # exception raised by training is retried too, up to the same bound.
            max_retries=max(options.max_attempts - 1, 0), retry_exceptions=True,
        )
        if progress:
            from kerasgen.display import ProgressMonitor

            monitor = ProgressMonitor(db, spec.name, mode=progress)
            monitor.start()
        driver = f"ray-driver:{runtime.worker_name()}"
        store = Store(db)
        report_cleaning(*clean_finished_packs(store, Path(options.checkpoint_dir)))
        options_dict = asdict(options)
        runner = RayRunner(ray, lambda claim: task.remote(writer, str(db), spec.to_dict(), claim,
                                                          options_dict, study_id),
                           _task_slots(ray.cluster_resources(), cpus_per_pack, gpus_per_pack))
        on_round = None if on_submitted is None else (
            lambda: on_submitted(writer, dict(runner.pending)))
        try:
            run_claims(store, study_id, driver, options, runner, device="ray", on_round=on_round)
        finally:
            store.close()
            ray.kill(writer)
    finally:
        if monitor is not None:
            monitor.stop()
        if started_here:
            ray.shutdown()
    with Store(db) as store:
        return store.counts(study_id)


__all__ = ["RAY_MISSING", "RemoteStore", "StoreWriter", "run_study_ray"]
