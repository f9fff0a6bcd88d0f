"""The lines the architecture relies on, held by tools: import contracts (import-linter,
configured in pyproject.toml), a clean linter (ruff), and the modules that must never load
TensorFlow, imported in a process where TensorFlow cannot be imported."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `make test` installs it (the test extra)")
    return found


def test_the_import_contracts_hold():
    run = subprocess.run([_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout and "4 kept" in run.stdout


def test_ruff_finds_nothing():
    run = subprocess.run([_tool("ruff"), "check", "kerasgen", "tui", "tests", "scripts"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:]


def _tensorflow_free() -> list[str]:
    """The one list: the source modules of the TensorFlow contract in pyproject.toml, plus
    the modules whose *import* must not load TensorFlow though some of their functions do
    (``kerasgen run`` reads options and specs through them before oneDNN is set)."""
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (line,) = [c for c in contracts["contracts"] if "tensorflow" in c.get("forbidden_modules", [])]
    return ["kerasgen", "kerasgen.cli", "kerasgen.worker", "kerasgen.runtime",
            *line["source_modules"]]


TENSORFLOW_FREE = _tensorflow_free()


def test_the_tensorflow_free_modules_import_where_tensorflow_cannot():
    code = ("import importlib, sys; sys.path.insert(0, 'tests'); "
            "import helpers.no_tensorflow; "
            f"[importlib.import_module(m) for m in {TENSORFLOW_FREE!r}]; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "[]"


def test_spec_and_command_line_unit_tests_pass_without_tensorflow():
    # tests/test_spec.py and tests/test_cli.py, run where importing TensorFlow fails.
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-p", "helpers.no_tensorflow", "tests/test_spec.py",
                          "tests/test_cli.py"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env={**__import__("os").environ,
                                           "PYTHONPATH": str(ROOT / "tests")})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
