"""Running a study: workers that claim packs from the store until none is left.

``run_study(spec, db)`` registers the study (idempotently), then trains every cell:
in this process (``workers=1``) or in N worker processes on this machine, one per GPU
where GPUs exist. Killed at any moment, the same call resumes: a pack whose worker is
gone is reclaimed (at once when its process is known to be dead on this host, else
after its heartbeat goes stale) and continues from its last checkpoint.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from kerasgen import runtime
from kerasgen.checkpoints import check_directory, default_root
from kerasgen.claims import LocalRunner, run_claims
from kerasgen.footprint import DiskProjection, human_bytes, project_disk
from kerasgen.options import RunOptions
from kerasgen.spec import Spec, from_dict
from kerasgen.store import Store, StoreError, check_writable, load_results, utc_now
from kerasgen.vocabulary import DONE

MAX_CELLS = 100_000
"""A study larger than this needs ``force=True`` (``kerasgen run --force``): a typo in a
range (step 0.0001) should not silently become a store of millions of cells."""
MIN_FREE_BYTES = 64 * 1024 * 1024
"""Free space the checkpoint directory needs before anything is claimed."""


class StudyError(RuntimeError):
    """The study cannot run as asked; the message says why and what to do."""


def _spec_of(store: Store, name: str) -> tuple[int, Spec]:
    study = store.study(name)
    if study is None:
        raise StoreError(f"No study named {name!r} in {store.path}.")
    return study["study_id"], from_dict(json.loads(study["spec_json"]))


def check_datasets(spec: Spec, options: RunOptions) -> None:
    """Load every data set once before anything is claimed, so a missing one fails
    at once with its message (and nothing is marked running or failed)."""
    from kerasgen.data import load_dataset

    for name in spec.datasets:
        load_dataset(name, data_dir=options.data_dir)


def worker_loop(db_path: str | Path, study: str, options: RunOptions,
                on_pack=None) -> int:
    """Claim and train packs of ``study`` in this process until none is pending or running
    elsewhere (``kerasgen.claims.run_claims``); returns the number of packs trained."""
    runtime.set_onednn(options.onednn)
    runtime.quiet_tensorflow()
    from kerasgen.train import prepare_dataset, train_pack

    store = Store(db_path)
    study_id, spec = _spec_of(store, study)
    worker = runtime.worker_name()
    device = runtime.describe_device()
    record_worker(store, study_id, worker, device, options)
    datasets: dict = {}

    def train(claim):
        dataset = claim.cells[0]["dataset"]
        if dataset not in datasets:
            datasets[dataset] = prepare_dataset(dataset, options, spec.training.dtype)
        return train_pack(store, claim, spec, datasets[dataset], options)

    try:
        return run_claims(store, study_id, worker, options, LocalRunner(train), device=device,
                          on_pack=on_pack)
    finally:
        store.close()


def record_worker(store: Store, study_id: int, worker: str, device: str,
                  options: RunOptions) -> None:
    """Record how this worker trains (device, compile mode, packed layout, oneDNN) in the
    study's environment: everything that could differ between cells is recorded."""
    import keras

    from kerasgen.packing import resolve_jit_compile, resolve_layout, xla_refused

    if xla_refused(options.jit_compile):
        print(f"kerasgen: worker {worker}: --jit-compile on has no effect under TensorFlow: "
              "the runner turns op determinism on (a resumed cell gives the same numbers) "
              "and Keras then compiles without XLA; recorded as jit_compile false. "
              "KERAS_BACKEND=jax trains with XLA.", file=sys.stderr, flush=True)
    store.update_study_environment(study_id, **{f"worker {worker}": {
        "device": device,
        "keras_backend": keras.backend.backend(),
        "jit_compile": resolve_jit_compile(options.jit_compile),
        "layout": resolve_layout(options.layout),
        "pack_size": options.pack_size,
        "stale_seconds": options.stale_seconds,
        "steps_per_execution": options.steps_per_execution,
        "mirrored": options.mirrored,
        "keep_weights": options.keep_weights,
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "onednn_in_effect": runtime.onednn_in_effect(),
        "started_at": utc_now(),
    }})


def _worker_process(db_path: str, study: str, options_dict: dict, gpu: str | None) -> None:
    """Entry point of a spawned worker process (one per GPU, or CPU workers)."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    runtime.set_onednn(options_dict.get("onednn"))
    runtime.quiet_tensorflow()
    options = RunOptions(**options_dict)
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        import tensorflow as tf

        for device in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(device, True)
    worker_loop(db_path, study, options)


def local_gpu_ids() -> list[str]:
    """GPU ids on this machine without importing TensorFlow (CUDA_VISIBLE_DEVICES, else
    nvidia-smi)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU")]


def _normalized(stored: dict) -> dict | None:
    """A stored specification as this kerasgen writes it (defaults of options added
    since filled in), or None when it no longer parses."""
    try:
        return from_dict(stored).to_dict()
    except (ValueError, TypeError):
        return None


def check_before_claiming(spec: Spec, db: str | Path, options: RunOptions,
                          workers: int = 1, force: bool = False, disk: bool = True) -> None:
    """Everything that can be known to fail before a pack is claimed: the size of the
    grid, the devices ``--mirrored`` needs, the checkpoint directory (writable, free
    space for the projected use: ``check_disk``; ``disk=False`` leaves that to the
    caller, the Ray driver, which knows its slots later), the data sets. Raises
    StudyError/DataError/OSError naming the problem; nothing is registered or claimed."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise StudyError(f"workers must be an integer >= 1. Received: workers={workers!r}")
    check_writable(db)
    if spec.cell_count > MAX_CELLS and not force:
        raise StudyError(
            f"The study {spec.name!r} has {spec.cell_count:,} cells (more than "
            f"{MAX_CELLS:,}): check its ranges; to run it anyway, pass --force "
            "(force=True).")
    if options.mirrored:
        count, what = mirrored_device_count()
        if count < 2:
            raise StudyError(f"--mirrored trains each cell on several devices, but this "
                             f"machine has {what}; run without --mirrored.")
    try:
        check_directory(default_root(db, options.checkpoint_dir), MIN_FREE_BYTES)
    except OSError as exc:
        raise StudyError(str(exc)) from exc
    if disk:
        check_disk(spec, db, options, workers, force)
    check_datasets(spec, options)


def check_disk(spec: Spec, db: str | Path, options: RunOptions, workers: int = 1,
               force: bool = False) -> DiskProjection:
    """Print the study's projected disk use (``kerasgen.footprint``) and refuse, unless
    ``force``, when the checkpoint directory has less free space than is still to be
    written (a resumed study counts only the cells not finished yet)."""
    finished = 0
    if Path(db).exists():
        try:
            results = load_results(db, spec.name)
            finished = int((results["status"] == DONE).sum()) if len(results) else 0
        except StoreError:
            finished = 0  # not a store yet, or not this study: refused later if bad
    projection = project_disk(spec, options.pack_size, workers, options.keep_weights,
                              finished_cells=finished)
    root = default_root(db, options.checkpoint_dir)
    free = shutil.disk_usage(root).free
    print(f"kerasgen: {projection.describe()}; {human_bytes(free)} free in {root}",
          file=sys.stderr, flush=True)
    if projection.needed > free and not force:
        raise StudyError(
            f"The study {spec.name!r} needs about {human_bytes(projection.needed)} more under "
            f"{root}, which has {human_bytes(free)} free. Free space, choose another "
            "--checkpoint-dir, keep fewer weights (--keep-weights none), or pass --force "
            "to start anyway.")
    return projection


def mirrored_device_count() -> tuple[int, str]:
    """Devices one mirrored cell can use here, without importing TensorFlow unless it is
    already loaded (then its logical devices count, as tests configure them)."""
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return len(gpus), f"{len(gpus)} GPU"
        cpus = tf.config.list_logical_devices("CPU")
        return len(cpus), f"{len(cpus)} CPU device(s) and no GPU"
    gpus = local_gpu_ids()
    return len(gpus), f"{len(gpus)} GPU" if gpus else "no GPU"


def register_study(spec: Spec, db: str | Path, options: RunOptions | None = None,
                   retry_failed: bool = False) -> int:
    options = options or RunOptions()
    with Store(db) as store:
        facts = runtime.environment_facts()
        facts["pack_size"] = options.pack_size
        study_id = store.create_study(spec.name, spec.to_dict(), spec.cells(), facts,
                                      normalize=_normalized)
        if retry_failed:
            store.reset_failed(study_id)
    return study_id


def run_study(spec: Spec, db: str | Path, options: RunOptions | None = None,
              workers: int = 1, progress: bool | str = "auto",
              retry_failed: bool = False, force: bool = False) -> dict:
    """Train every cell of ``spec`` into the store at ``db``; resumable; returns the
    counts by status when the study is complete.

    Everything that can be checked before a pack is claimed is (``check_before_claiming``);
    ``force`` lets a grid of more than ``MAX_CELLS`` cells run."""
    options = options or RunOptions()
    runtime.set_onednn(options.onednn)
    db = Path(db)
    check_before_claiming(spec, db, options, workers, force)
    study_id = register_study(spec, db, options, retry_failed)
    monitor = None
    if progress:
        from kerasgen.display import ProgressMonitor

        monitor = ProgressMonitor(db, spec.name, mode=progress)
        monitor.start()
    try:
        if workers == 1:
            worker_loop(db, spec.name, options)
        else:
            _run_processes(db, spec.name, options, workers)
    finally:
        if monitor is not None:
            monitor.stop()
    with Store(db) as store:
        return store.counts(study_id)


def _run_processes(db: Path, study: str, options: RunOptions, workers: int) -> None:
    gpus = local_gpu_ids()
    ctx = multiprocessing.get_context("spawn")
    procs = []
    for i in range(workers):
        gpu = gpus[i % len(gpus)] if gpus else None
        proc = ctx.Process(target=_worker_process, name=f"kerasgen-worker-{i}",
                           args=(str(db), study, asdict(options), gpu))
        proc.start()
        procs.append(proc)
    try:
        for proc in procs:
            proc.join()
    except KeyboardInterrupt:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join()
        raise
    bad = [p.name for p in procs if p.exitcode not in (0, None)]
    if bad:
        # A worker that died mid-pack left it running; finish it here.
        worker_loop(db, study, options)


__all__ = ["MAX_CELLS", "StudyError", "check_before_claiming", "check_datasets", "check_disk",
           "local_gpu_ids", "mirrored_device_count", "register_study", "run_study",
           "worker_loop"]

