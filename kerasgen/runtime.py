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
