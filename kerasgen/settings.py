"""The kernel settings a run is trained under: which recorded settings choose the kernels
its numbers come from, how they read, and how two workers' settings differ. No
TensorFlow here (the store and the report read them)."""

from __future__ import annotations


class SettingsMismatch(RuntimeError):
    """A worker would train a study's runs under other kernel settings than its earlier
    runs were trained under (``KERNEL_SETTINGS``); the message names each difference."""


KERNEL_SETTINGS = ("keras_backend", "backend_version", "onednn_in_effect", "jit_compile",
                   "device")
"""The recorded settings that choose the kernels a run's numbers come from: runs of one
study trained under different values are not comparable bit for bit, and a study refuses
to mix them unless forced (``kerasgen run --force``)."""


def describe_kernels(env: dict) -> str:
    """A worker's kernel settings in words: ``tensorflow 2.21.0, oneDNN on, XLA off, CPU
    (AMD EPYC, 2 cores)``."""
    parts = [f"{env.get('keras_backend', '?')} {env.get('backend_version') or ''}".strip()]
    onednn = env.get("onednn_in_effect")
    if onednn is not None:
        parts.append(f"oneDNN {'on' if onednn else 'off'}")
    if "jit_compile" in env:
        parts.append(f"XLA {'on' if env['jit_compile'] else 'off'}")
    if env.get("device"):
        parts.append(str(env["device"]))
    return ", ".join(parts)


def kernel_differences(mine: dict, others: dict[str, dict]) -> list[str]:
    """Sentences naming each kernel setting in which ``mine`` differs from a recorded
    worker of ``others`` (name -> its environment)."""
    found = []
    for name, env in sorted(others.items()):
        for key in KERNEL_SETTINGS:
            if key in env and key in mine and env[key] != mine[key]:
                found.append(f"{key} {mine[key]!r} here, {env[key]!r} for {name}")
    return found


__all__ = ["KERNEL_SETTINGS", "SettingsMismatch", "describe_kernels", "kernel_differences"]
