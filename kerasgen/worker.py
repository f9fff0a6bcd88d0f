"""Running a study: workers that claim packs from the store until none is left.

``run_study(spec, db)`` registers the study (idempotently), then trains every cell:
in this process (``workers=1``) or in N worker processes on this machine, one per GPU
where GPUs exist. Killed at any moment, the same call resumes: a pack whose worker is
gone is reclaimed (at once when its process is known to be dead on this host, else
after its heartbeat goes stale) and continues from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from kerasgen import runtime
from kerasgen.checkpoints import (
    check_directory,
    clean_finished_packs,
    default_root,
    existing_ancestor,
)
from kerasgen.claims import LocalRunner, run_claims
from kerasgen.footprint import DiskProjection, human_bytes, project_disk
from kerasgen.naming import dataset_ref
from kerasgen.options import RunOptions
from kerasgen.settings import SettingsMismatch, kernel_differences
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
    try:
        return study["study_id"], from_dict(json.loads(study["spec_json"]))
    except (ValueError, TypeError) as exc:  # JSONDecodeError and SpecError are ValueErrors
        raise StoreError(f"The specification of study {name!r} in {store.path} is damaged "
                         f"({exc}); it cannot be resumed. Run the study under another name "
                         "or into another store.") from None


def check_datasets(spec: Spec, options: RunOptions) -> dict[str, tuple]:
    """Load every data set once before anything is claimed, so a missing one fails
    at once with its message (and nothing is marked running or failed); returns each
    one's (input shape, number of classes, training images)."""
    from kerasgen.data import load_dataset

    shapes = {}
    for name in spec.datasets:
        ds = load_dataset(name, data_dir=options.data_dir)
        shapes[name] = (tuple(ds.input_shape), int(ds.num_classes), int(ds.train_size))
    return shapes


def network_facts(spec: Spec, model: str, input_shape, num_classes: int) -> dict:
    """What a network of your own is, built once: its import path, arguments, fingerprint
    (layer classes, weight shapes, parameter count: ``models.fingerprint``) and the hash
    of the module file that defines it. Raises ModelError naming what is wrong."""
    import keras

    from kerasgen.models import build_model, fingerprint, module_hash
    from kerasgen.packing import float_type

    ref = spec.model(model)
    with float_type("float32"):
        net = build_model(ref, num_classes=num_classes, input_shape=input_shape)
        facts = {"target": ref.target, "args": dict(ref.args), **fingerprint(net),
                 "module_hash": module_hash(ref),
                 "arrays": len(net.weights),
                 "trainable": int(sum(int(keras.ops.size(w)) for w in net.trainable_weights))}
    facts["fixed"] = facts["params"] - facts["trainable"]
    del net
    return facts


def verify_network(store, study_id: int, spec: Spec, model: str, ds, verified: set) -> None:
    """In a worker (any process, any machine): the network of your own that a claim
    trains is the one the study recorded, else NetworkChanged (the claim is given back,
    the run stops naming the change). Once per (model, data set) per process."""
    key = f"{model} on {ds.name}"
    if key in verified or spec.model(model).builtin:
        return
    recorded = store.study_environment(study_id).get("networks", {})
    check_networks(spec.replace(models=[model]) if len(spec.models) > 1 else spec,
                   {ds.name: (tuple(ds.input_shape), int(ds.num_classes), ds.train_size)},
                   {k: v for k, v in recorded.items() if k == key})
    verified.add(key)


class NetworkChanged(SettingsMismatch):
    """A network of your own differs from the one the study's runs were trained with."""


def check_networks(spec: Spec, shapes: dict, recorded: dict) -> dict:
    """Build every network of your own on every data set of the study (``shapes``: data
    set -> (input shape, classes)), check it, and compare it with what the study
    recorded when it started (``recorded``: the study's ``networks`` facts), refusing
    (``NetworkChanged``, naming what changed) a network that is no longer the same.
    Returns the facts to record: "<model> on <dataset>" -> ``network_facts``."""
    facts = {}
    for model in spec.models:
        if spec.model(model).builtin:
            for dataset, (shape, *_) in shapes.items():
                if len(shape) != 3:
                    from kerasgen.models import ModelError

                    raise ModelError(f"model {model!r} takes images (height, width, channels); "
                                     f"data set {dataset!r} has examples of shape {shape}.")
            continue
        for dataset, (shape, classes, *_) in shapes.items():
            key = f"{model} on {dataset}"
            now = network_facts(spec, model, shape, classes)
            before = recorded.get(key)
            if before:
                changed = [f"{what} {before.get(what)!r} then, {now.get(what)!r} now"
                           for what in ("network_hash", "params", "module_hash", "target", "args")
                           if before.get(what) != now.get(what)]
                if changed:
                    raise NetworkChanged(
                        f"the network {key!r} is not the one the study's runs were trained "
                        f"with: {'; '.join(changed)}. Restore the module, or run the changed "
                        "network as another study (another name).")
            facts[key] = now
    return facts


def worker_loop(db_path: str | Path, study: str, options: RunOptions,
                on_pack=None) -> int:
    """Claim and train packs of ``study`` in this process until none is pending or running
    elsewhere (``kerasgen.claims.run_claims``); returns the number of packs trained."""
    runtime.set_onednn(options.onednn)
    runtime.quiet_tensorflow()
    from kerasgen.train import prepare_dataset, train_pack

    store = Store(db_path)
    try:
        study_id, spec = _spec_of(store, study)
        report_cleaning(*clean_finished_packs(store, default_root(db_path,
                                                                  options.checkpoint_dir)))
        worker = runtime.worker_name()
        env = worker_environment(options)
        record_worker(store, study_id, worker, env, options)
        datasets: dict = {}
        verified: set = set()

        def train(claim):
            dataset = claim.cells[0]["dataset"]
            if dataset not in datasets:
                datasets[dataset] = prepare_dataset(dataset, options, spec.training.dtype)
            verify_network(store, study_id, spec, claim.cells[0]["model"], datasets[dataset],
                           verified)
            return train_pack(store, claim, spec, datasets[dataset], options)

        return run_claims(store, study_id, worker, options, LocalRunner(train),
                          device=env["device"], on_pack=on_pack)
    finally:
        store.close()


def report_cleaning(removed: list, kept: list[str]) -> None:
    """Say what the cleaning of finished packs' checkpoints did (stderr)."""
    if removed:
        freed = human_bytes(sum(size for _, size in removed))
        print(f"kerasgen: removed the checkpoints of {len(removed)} finished pack(s) "
              f"({freed}) left by an interrupted run", file=sys.stderr, flush=True)
    for sentence in kept:
        print(f"kerasgen: {sentence}", file=sys.stderr, flush=True)


def worker_environment(options: RunOptions) -> dict:
    """How this process trains, as it is in effect (not as asked): the Keras backend and
    its version, the device, the compile mode and packed layout, oneDNN, TensorFlow's
    thread pools and op determinism, the versions. Everything that could make two runs'
    numbers differ; ``settings.KERNEL_SETTINGS`` are those that choose the kernels."""
    import keras

    from kerasgen.packing import resolve_jit_compile, resolve_layout
    from kerasgen.train import configure_backend

    configure_backend()
    backend = keras.backend.backend()
    return {
        "device": runtime.describe_device(),
        "keras_backend": backend,
        "backend_version": runtime.backend_version(backend),
        "keras_version": runtime.package_version("keras"),
        "kerasgen_version": runtime.package_version("kerasgen"),
        "jit_compile": resolve_jit_compile(options.jit_compile, options.exact),
        "layout": resolve_layout(options.layout),
        "pack_size": options.pack_size,
        "stale_seconds": options.stale_seconds,
        "steps_per_execution": options.steps_per_execution,
        "mirrored": options.mirrored,
        "keep_weights": options.keep_weights,
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "onednn_in_effect": runtime.onednn_in_effect(),
        "op_determinism": runtime.op_determinism_in_effect(),
        **runtime.threads_in_effect(),
        "pid": os.getpid(),
        "started_at": utc_now(),
    }


def record_worker(store, study_id: int, worker: str, env: dict,
                  options: RunOptions) -> None:
    """Record how this worker trains in the study's environment (everything that could
    differ between runs is recorded), after checking that it trains under the same
    kernel settings as the study's earlier workers: otherwise SettingsMismatch, naming
    each difference, unless ``options.allow_mixed_settings``. ``store`` is a Store or
    the Ray backend's proxy."""
    from kerasgen.packing import xla_refused

    if xla_refused(options.jit_compile):
        print(f"kerasgen: worker {worker}: --jit-compile on has no effect under TensorFlow: "
              "the runner turns op determinism on (a resumed cell gives the same numbers) "
              "and Keras then compiles without XLA; recorded as jit_compile false. "
              "KERAS_BACKEND=jax trains with XLA.", file=sys.stderr, flush=True)
    others = {name[len("worker "):]: value
              for name, value in store.study_environment(study_id).items()
              if name.startswith("worker ") and isinstance(value, dict)
              and name != f"worker {worker}"}
    differences = kernel_differences(env, others)
    if differences and not options.allow_mixed_settings:
        raise SettingsMismatch(
            f"worker {worker} would train under other kernel settings than the study's "
            f"earlier runs ({'; '.join(differences[:4])}): their numbers would not be "
            "comparable bit for bit. Run with the earlier settings (--onednn, "
            "KERAS_BACKEND, --jit-compile, the same device), or pass --force to mix them "
            "(the report lists the settings of every run).")
    if differences:
        print(f"kerasgen: worker {worker} trains under other kernel settings than earlier "
              f"runs of the study ({'; '.join(differences[:4])}); allowed by --force.",
              file=sys.stderr, flush=True)
    store.update_study_environment(study_id, **{f"worker {worker}": env})


def _worker_process(db_path: str, study: str, options_dict: dict, gpu: str | None) -> None:
    """Entry point of a spawned worker process (one per GPU, or CPU workers)."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    runtime.set_keras_backend(options_dict.get("keras_backend", "tensorflow"))
    runtime.set_onednn(options_dict.get("onednn"))
    runtime.quiet_tensorflow()
    options = RunOptions(**options_dict)
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        import tensorflow as tf

        for device in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(device, True)
    try:
        worker_loop(db_path, study, options)
    except SettingsMismatch as exc:
        print(f"kerasgen: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_REFUSED)


EXIT_REFUSED = 2
"""A worker process's exit status when the study refused it (SettingsMismatch): the
driver stops instead of finishing the study in its own process."""


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
    if options.layout == "fused":
        yours = [m for m in spec.models if not spec.model(m).builtin]
        if yours:
            raise StudyError(f"--layout fused knows only the built-in networks, not {yours[0]!r}; "
                             "use --layout branches (auto chooses it for your networks).")
    names_tell = all(spec.model(m).builtin for m in spec.models) and all(
        dataset_ref(d).builtin for d in spec.datasets)
    if disk and names_tell:
        # Sizes known from the names: refuse a study no disk holds before loading its data.
        check_disk(spec, db, options, workers, force)
    shapes = check_datasets(spec, options)
    # The backend first: building a network of your own imports Keras, which fixes it.
    backend, why = choose_backend(spec, db, options, shapes)
    print(f"kerasgen: Keras backend {backend} ({why})", file=sys.stderr, flush=True)
    runtime.set_keras_backend(backend)
    networks = check_networks(spec, shapes, _recorded_networks(db, spec.name))
    measured = _measured(spec, shapes, networks)
    if disk and not names_tell:
        check_disk(spec, db, options, workers, force, measured=measured)
    return Checked(networks, measured, backend)


def choose_backend(spec: Spec, db, options: RunOptions, shapes: dict) -> tuple[str, str]:
    """The Keras backend the study trains with (``kerasgen.backends.choose``: as asked, or
    for ``auto`` the one its earlier runs used, else the faster one measured)."""
    from kerasgen.backends import choose

    recorded = []
    if Path(db).exists():
        try:
            with Store(db, create=False) as store:
                row = store.study(spec.name)
                env = store.study_environment(row["study_id"]) if row else {}
            recorded = sorted({v.get("keras_backend") for k, v in env.items()
                               if k.startswith("worker ") and isinstance(v, dict)
                               and v.get("keras_backend")})
        except StoreError:
            recorded = []
    return choose(spec, options, recorded, shapes)


@dataclass(frozen=True)
class Checked:
    """What ``check_before_claiming`` learned: the networks of your own to record, and the
    sizes of networks the disk projection cannot know from names."""

    networks: dict
    measured: dict
    keras_backend: str = "tensorflow"


def _recorded_networks(db, study: str) -> dict:
    """The ``networks`` facts a study recorded (empty when there is no such study yet)."""
    if not Path(db).exists():
        return {}
    try:
        with Store(db, create=False) as store:
            row = store.study(study)
            return store.study_environment(row["study_id"]).get("networks", {}) if row else {}
    except StoreError:
        return {}  # not a store, or a foreign one: refused with its message later


def _measured(spec: Spec, shapes: dict, networks: dict) -> dict:
    """(model, dataset) -> (trainable, fixed, arrays) for the disk projection, where the
    name alone does not tell: networks of your own, data sets of your own."""
    from kerasgen.footprint import parameter_count, variable_count

    measured = {}
    for model in spec.models:
        for dataset, (shape, classes, *_) in shapes.items():
            facts = networks.get(f"{model} on {dataset}")
            if facts:
                measured[(model, dataset)] = (facts["trainable"], facts["fixed"], facts["arrays"])
            elif len(shape) == 3:
                trainable, fixed = parameter_count(model, shape, classes)
                measured[(model, dataset)] = (trainable, fixed, variable_count(model))
    return measured


def check_disk(spec: Spec, db: str | Path, options: RunOptions, workers: int = 1,
               force: bool = False, measured: dict | None = None) -> DiskProjection:
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
                              finished_cells=finished, measured=measured)
    root = default_root(db, options.checkpoint_dir)
    free = shutil.disk_usage(existing_ancestor(root)).free
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
                   retry_failed: bool = False, networks: dict | None = None,
                   extend: bool = False) -> int:
    """Register the study (idempotently) and record the networks of your own it trains
    (``check_networks``' facts), so that a later resume is refused if one changed. A spec
    that only grows the stored one (``kerasgen.spec.growth``) extends it with ``extend``
    (``grow_study``), and is refused, saying so, without."""
    options = options or RunOptions()
    with Store(db) as store:
        facts = runtime.environment_facts()
        facts["pack_size"] = options.pack_size
        row = store.study(spec.name)
        if row is not None:
            grow_study(store, row, spec, extend, options.checkpoint_dir)
        study_id = store.create_study(spec.name, spec.to_dict(), spec.cells(), facts,
                                      normalize=_normalized)
        if networks:
            recorded = store.study_environment(study_id).get("networks", {})
            store.update_study_environment(study_id, networks={**recorded, **networks})
        if retry_failed:
            store.reset_failed(study_id)
            logged = store.logged_failures(study_id)
            if logged:
                print(f"kerasgen: --retry-failed leaves cells {logged} failed: a SQLiteLogger "
                      "recorded their epochs, and a run would append to another training's "
                      "rows.", file=sys.stderr, flush=True)
    return study_id


def run_study(spec: Spec, db: str | Path, options: RunOptions | None = None,
              workers: int = 1, progress: bool | str = "auto",
              retry_failed: bool = False, force: bool = False, extend: bool = False) -> dict:
    """Train every cell of ``spec`` into the store at ``db``; resumable; returns the
    counts by status when the study is complete.

    Everything that can be checked before a pack is claimed is (``check_before_claiming``);
    ``force`` lets a grid of more than ``MAX_CELLS`` cells run."""
    options = options or RunOptions()
    if force and not options.allow_mixed_settings:
        options = replace(options, allow_mixed_settings=True)
    runtime.set_onednn(options.onednn)
    db = Path(db)
    checked = check_before_claiming(spec, db, options, workers, force)
    options = replace(options, keras_backend=checked.keras_backend)
    _check_importable(spec, workers, options)
    study_id = register_study(spec, db, options, retry_failed, checked.networks, extend)
    monitor = None
    if progress:
        from kerasgen.display import ProgressMonitor

        monitor = ProgressMonitor(db, spec.name, mode=progress)
        monitor.start()
    try:
        if workers == 1 and _train_here(options):
            worker_loop(db, spec.name, options)
        else:
            _run_processes(db, spec.name, options, workers)
    finally:
        if monitor is not None:
            monitor.stop()
    with Store(db) as store:
        return store.counts(study_id)


def grow_study(store: Store, row: dict, spec: Spec, extend: bool,
               checkpoint_dir: str | None = None) -> None:
    """Extend the stored study ``row`` to ``spec`` when ``spec`` only grows it and
    ``extend`` is given, printing exactly what is added; a growing spec without
    ``extend`` is a StudyMismatch saying to pass it. Other differences are left to
    ``create_study``, which refuses them naming the keys."""
    from kerasgen.checkpoints import cell_weights_path, study_directory
    from kerasgen.spec import growth
    from kerasgen.store import StudyMismatch

    try:
        stored = from_dict(json.loads(row["spec_json"]))
    except (ValueError, TypeError):
        return  # damaged or older: create_study names the problem
    if stored.to_dict() == spec.to_dict():
        return
    grown, problems = growth(stored, spec)
    if grown is None:
        if extend:
            raise StudyMismatch(f"--extend grows a study only by adding models, data sets, "
                                f"batch sizes, learning rates or seeds, or more epochs under "
                                f"the epochs rule; this specification changes what "
                                f"{spec.name!r} already recorded: {'; '.join(problems)}.")
        return
    if not extend:
        raise StudyMismatch(f"The study {spec.name!r} in {store.path} has a smaller "
                            f"specification; this one adds {grown.describe()}. Pass --extend "
                            "(run_study(..., extend=True)) to grow the study, or give the new "
                            "one another name.")
    continue_after = None
    if grown.epochs:
        continue_after = grown.epochs[0]
        if spec.training.momentum:
            raise StudyError(f"--extend cannot raise the epochs of {spec.name!r}: it trains "
                             "with momentum, whose state is not kept with a cell's final "
                             "weights. Run the longer study under another name.")
        root = default_root(store.path, checkpoint_dir)
        directory = study_directory(root, row["name"], row.get("uid"))
        done = [r for r in store.conn.execute(
            "SELECT cell_id FROM cells WHERE study_id = ? AND status = 'done' "
            "AND epochs_done = ?", (row["study_id"], continue_after))]
        missing = [c for (c,) in done if not cell_weights_path(directory, c).exists()]
        if missing:
            raise StudyError(f"--extend cannot raise the epochs of {spec.name!r}: {len(missing)} "
                             f"finished cells have no final weights in {directory} (the study "
                             "ran with --keep-weights none). Run the longer study under "
                             "another name.")
    counts = store.extend_study(row["study_id"], spec.to_dict(), spec.cells(), continue_after)
    print(f"kerasgen: extending study {spec.name!r}: {grown.describe()}; {counts['added']} new "
          f"cells, {counts['continued']} finished cells continue.", file=sys.stderr, flush=True)


def _check_importable(spec: Spec, workers: int, options: RunOptions) -> None:
    """A network registered from a function no other process can import (defined in a
    script's ``__main__``) trains only in this process: refused, naming it, when the study
    needs worker processes."""
    local = [m for m in spec.models
             if spec.model(m).kind == "registered" and spec.model(m).target is None]
    if local and (workers > 1 or not _train_here(options, quiet=True)):
        raise StudyError(
            f"model {local[0]!r} is registered from a function defined in a script's __main__ "
            "(or inside a function), which a worker process cannot import; this study needs "
            "worker processes. Define the function at module level in an importable module "
            "(or name it by its import path, 'package.module:function').")


def _train_here(options: RunOptions, quiet: bool = False) -> bool:
    """Whether a one-worker study trains in this process (``RunOptions.process``): not
    when a setting read once per process was fixed here with another value than the
    study asks for (then a fresh worker process trains it, and says why), nor with
    ``process="new"``. With ``process="this"`` such a setting is a StudyError."""
    if options.process == "new":
        return False
    problems = runtime.unhonoured_settings(options.onednn, options.keras_backend)
    if not problems:
        return True
    if options.process == "this":
        raise StudyError("This process cannot train the study as asked: "
                         + "; ".join(problems) + ". Run it in a fresh process (kerasgen run, "
                         "or RunOptions(process='auto'/'new')), or ask for the setting in "
                         "effect here.")
    if not quiet:
        print("kerasgen: training in a fresh worker process, because "
              + "; ".join(problems) + ".", file=sys.stderr, flush=True)
    return False


WORKER_COMMAND = ("import json, sys; from kerasgen.worker import _worker_process; "
                  "_worker_process(**json.loads(sys.argv[1]))")
"""What a worker process runs: a fresh interpreter that imports only kerasgen (never the
caller's ``__main__``, unlike multiprocessing's spawn: a user's script without an
``if __name__ == "__main__"`` guard would run again in every worker)."""


class _WorkerProcess:
    def __init__(self, name: str, popen: subprocess.Popen):
        self.name, self.popen = name, popen

    @property
    def exitcode(self) -> int | None:
        return self.popen.returncode


def _run_processes(db: Path, study: str, options: RunOptions, workers: int,
                   finish_leftovers: bool = True) -> None:
    gpus = local_gpu_ids()
    procs = []
    for i in range(workers):
        gpu = gpus[i % len(gpus)] if gpus else None
        arguments = json.dumps({"db_path": str(db), "study": study,
                                "options_dict": asdict(options), "gpu": gpu})
        procs.append(_WorkerProcess(f"kerasgen-worker-{i}", subprocess.Popen(
            [sys.executable, "-c", WORKER_COMMAND, arguments])))
    try:
        for proc in procs:
            proc.popen.wait()
    except KeyboardInterrupt:
        for proc in procs:
            proc.popen.terminate()
        for proc in procs:
            proc.popen.wait()
        raise
    refused = [p.name for p in procs if p.exitcode == EXIT_REFUSED]
    if refused:
        raise SettingsMismatch(f"{', '.join(refused)} refused to train the study (its "
                               "message is above); nothing it would have trained was "
                               "claimed")
    bad = [p.name for p in procs if p.exitcode not in (0, None)]
    if bad and finish_leftovers:
        # A worker that died mid-pack left it running; finish it (here, or in one fresh
        # process when this one cannot train with the study's settings).
        if _train_here(replace(options, process="auto")):
            worker_loop(db, study, options)
        else:
            _run_processes(db, study, options, 1, finish_leftovers=False)


__all__ = ["MAX_CELLS", "NetworkChanged", "SettingsMismatch", "StudyError",
           "check_before_claiming", "check_networks", "network_facts", "verify_network",
           "check_datasets", "check_disk", "local_gpu_ids", "mirrored_device_count",
           "record_worker", "register_study", "run_study", "worker_environment",
           "worker_loop"]
