"""The process's runtime: environment flags set before TensorFlow loads, and the facts
recorded with every study (versions, host, device) — read without importing TensorFlow
where possible (``importlib.metadata``)."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import sys
from importlib import metadata
from pathlib import Path


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ start-up chatter unless the user asked for it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def set_onednn(enabled: bool | str | None) -> None:
    """Set ``TF_ENABLE_ONEDNN_OPTS`` before TensorFlow loads (it is read once, at import).

    ``True``/``False`` force it; ``None`` leaves TensorFlow's own default (which differs
    by CPU: on for the Intel Xeon we measured on, off for the AMD CPU of issue 9);
    ``"auto"`` turns it on for x86-64 CPUs, where scripts/bench_train.py measured it
    1.6x faster on both (ResNet-20, batch 16, K=8), unless the variable is already set,
    and leaves other architectures to TensorFlow. Has no effect once TensorFlow is
    imported, so callers set it first thing in a worker process.
    """
    explicit = enabled in (True, False)
    if enabled == "auto":
        enabled = resolve_onednn_auto()
    if enabled is None:
        return
    if "tensorflow" in sys.modules:
        in_effect = onednn_in_effect()
        if explicit and in_effect is not None and in_effect != enabled:
            import warnings

            warnings.warn(f"oneDNN was asked {'on' if enabled else 'off'}, but TensorFlow was "
                          f"already imported with it {'on' if in_effect else 'off'}; it stays "
                          "so in this process (the study records what was in effect)",
                          RuntimeWarning, stacklevel=2)
        return
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if enabled else "0"


def resolve_onednn_auto() -> bool | None:
    """What ``--onednn auto`` means here: a value the user already exported wins; on for
    x86-64; otherwise TensorFlow's default (``None``)."""
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") is not None:
        return None
    return True if platform.machine().lower() in ("x86_64", "amd64") else None


def onednn_in_effect() -> bool | None:
    """Whether TensorFlow is running with oneDNN kernels (None: TensorFlow not loaded).

    ``TF_ENABLE_ONEDNN_OPTS`` unset means TensorFlow decides per CPU: on the Intel Xeon
    we measured on it is on, on the AMD CPU of the issue it was off, so the variable alone
    does not say what ran.
    """
    if "tensorflow" not in sys.modules:
        return None
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a TensorFlow build without the probe
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


def _onednn_from_variable() -> bool | None:
    """What an exported ``TF_ENABLE_ONEDNN_OPTS`` asks for (TensorFlow's own reading: a
    number, or true/false); None when it is not exported."""
    text = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if text is None:
        return None
    text = text.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    return None


def onednn_wanted(enabled: bool | str | None) -> bool | None:
    """Whether a fresh process given ``--onednn enabled`` runs with oneDNN (None: it is
    TensorFlow's own per-CPU choice, which cannot be known before TensorFlow loads)."""
    if enabled in (True, False):
        return bool(enabled)
    if enabled == "auto":
        resolved = resolve_onednn_auto()
        if resolved is not None:
            return resolved
    return _onednn_from_variable()


def unhonoured_settings(onednn: bool | str | None = "auto",
                        keras_backend: str | None = None) -> list[str]:
    """The settings read once per process (at TensorFlow's or Keras's import) that this
    process can no longer give a run, each as a sentence naming what was asked and what
    is in effect. Empty when nothing is loaded yet, or everything loaded agrees: then a
    run in this process trains exactly as a fresh worker process would.

    - oneDNN (``TF_ENABLE_ONEDNN_OPTS``): read when TensorFlow is imported.
    - the Keras backend (``KERAS_BACKEND``): read when Keras is imported.

    Thread counts are not set by kerasgen (TensorFlow's defaults from the CPU count, in
    every process alike) and op determinism is switched on per pack at any time, so
    neither can differ; both are recorded with each worker (``worker_environment``).
    """
    problems = []
    wanted = onednn_wanted(onednn)
    in_effect = onednn_in_effect()
    if wanted is not None and in_effect is not None and wanted != in_effect:
        asked = {True: "on", False: "off"}.get(onednn, onednn)  # type: ignore[arg-type]
        problems.append(
            f"oneDNN: --onednn {asked} means {'on' if wanted else 'off'} for a fresh "
            f"process, but TensorFlow was already imported in this process with oneDNN "
            f"{'on' if in_effect else 'off'} (TF_ENABLE_ONEDNN_OPTS is read once, at import)")
    backend = (keras_backend if keras_backend not in (None, "auto")
               else os.environ.get("KERAS_BACKEND", "tensorflow"))
    loaded = loaded_keras_backend()
    if loaded is not None and loaded != backend:
        problems.append(f"Keras backend: {backend} was asked for, but Keras was already "
                        f"imported in this process with the {loaded} backend "
                        "(KERAS_BACKEND is read once, at import)")
    return problems


def set_keras_backend(backend: str | None) -> None:
    """Set ``KERAS_BACKEND`` for this process if Keras is not imported yet (it is read once,
    at import); a process whose Keras runs another backend is left as it is, and
    ``unhonoured_settings`` says so."""
    if backend and backend != "auto" and "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = backend


def loaded_keras_backend() -> str | None:
    """The backend of the Keras already imported in this process (None: not imported)."""
    if "keras" not in sys.modules:
        return None
    import keras

    return keras.backend.backend()


def threads_in_effect() -> dict:
    """TensorFlow's thread pools as configured in this process (0: TensorFlow's default,
    from the CPU count) and the variables that set them; {} when TensorFlow is not
    loaded."""
    if "tensorflow" not in sys.modules:
        return {}
    import tensorflow as tf

    return {
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def op_determinism_in_effect() -> bool | None:
    """Whether TensorFlow's op determinism is on in this process (None: not loaded)."""
    if "tensorflow" not in sys.modules:
        return None
    try:
        from tensorflow.python.framework import config
    except ImportError:
        return None
    return bool(config.is_op_determinism_enabled())


def backend_version(backend: str) -> str | None:
    return package_version("jax" if backend == "jax" else
                           "torch" if backend == "torch" else "tensorflow")


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment_facts() -> dict:
    """What a reader needs to trust a result; cheap (no TensorFlow import)."""
    from kerasgen import __version__

    facts = {
        "kerasgen": __version__,
        "tensorflow": package_version("tensorflow"),
        "keras": package_version("keras"),
        "numpy": package_version("numpy"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
    }
    if "tensorflow" in sys.modules or "keras" in sys.modules:
        facts["device"] = describe_device()
    return facts


def describe_device() -> str:
    """The accelerator this process trains on, in words (imports the backend)."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend == "jax":
        import jax

        devices = jax.devices()
        return ", ".join(sorted({d.device_kind for d in devices})) + f" x{len(devices)} (jax)"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = []
        for gpu in gpus:
            details = tf.config.experimental.get_device_details(gpu)
            names.append(details.get("device_name", gpu.name))
        return f"{len(gpus)} GPU: " + ", ".join(names)
    return f"CPU ({cpu_model()}, {os.cpu_count()} cores)"


def cpu_model() -> str:
    """The CPU's marketing name where the OS says it (Linux), else the architecture:
    oneDNN's default and its speed-up differ between CPU vendors."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def native_output_to(log_path: str | os.PathLike | None):
    """Send what the process's native libraries print on stderr (TensorFlow's and CUDA's
    start-up lines, absl's warnings) to ``log_path`` while the block runs; Python's own
    ``sys.stderr`` (kerasgen's messages, tracebacks, the progress display) still reaches
    the terminal. ``None``: change nothing (``--verbose``). Worker processes started in
    the block inherit the log as their stderr."""
    log = None
    if log_path is not None:
        try:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError:
            log = None  # a directory this user may not write: the command says why later
    if log is None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    previous = sys.stderr
    terminal = os.fdopen(os.dup(saved), "w", buffering=1,
                         encoding=getattr(previous, "encoding", None) or "utf-8",
                         errors="backslashreplace")
    os.dup2(log, 2)
    os.close(log)
    sys.stderr = terminal
    try:
        yield
    finally:
        terminal.flush()
        sys.stderr = previous
        os.dup2(saved, 2)
        os.close(saved)
        terminal.close()
