"""The README is true: every command and option that exists is documented (and nothing
documented is missing), every option's help states its default, and the Python examples
run as written."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kerasgen.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions if not isinstance(a, argparse._HelpAction)
            for o in a.option_strings if o.startswith("--")}


def _section(name: str) -> str:
    start = README.index(f"### `kerasgen {name}`")
    end = README.find("\n### ", start + 1)
    stop = README.find("\n## ", start + 1)
    ends = [e for e in (end, stop) if e != -1]
    return README[start:min(ends) if ends else len(README)]


@pytest.mark.parametrize("name", sorted(_commands()))
def test_the_readme_documents_exactly_the_options_each_command_has(name):
    parser = _commands()[name]
    section = _section(name)
    documented = set(re.findall(r"^\| `(--[a-z][a-z-]*)`", section, re.M))
    documented |= set(re.findall(r"^\| `-[a-z]`, `(--[a-z][a-z-]*)`", section, re.M))
    assert documented == _options(parser), (
        f"README lacks {sorted(_options(parser) - documented)}, "
        f"documents what does not exist: {sorted(documented - _options(parser))}")
    for action in parser._actions:
        if not action.option_strings:  # positional arguments are documented by name
            assert f"| `{action.metavar or action.dest}` |" in section, action.dest


def test_the_readme_has_a_section_for_every_command_and_no_other():
    sections = set(re.findall(r"^### `kerasgen ([a-z]+)`", README, re.M))
    assert sections == set(_commands())


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_option_says_what_it_is_and_its_default(name):
    parser = _commands()[name]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        assert action.help, action.option_strings
        assert "(default:" in formatter._expand_help(action), action.option_strings


def test_the_main_help_states_the_exit_status_convention():
    text = build_parser().format_help()
    assert "exit status:" in text and "2    the input cannot be used" in text


@pytest.mark.slow
def test_the_readme_python_examples_run_as_written(tmp_path):
    section = README[README.index("## Python\n"):README.index("\n## ", README.index("## Python\n") + 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) >= 2
    (tmp_path / "data").mkdir()
    run = subprocess.run([sys.executable, "-c", "\n".join(blocks)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=900,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                              "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-3000:]
    # Both examples reached their report, over their own cells.
    assert run.stdout.count("# Batch size, learning rate and generalization") == 2
    assert "'optimizer': 'sgd'" in run.stdout or '"optimizer": "sgd"' in run.stdout


@pytest.mark.slow
def test_the_readme_own_network_example_runs_as_written(tmp_path):
    section = README[README.index("## Your own network and data\n"):
                     README.index("\n## ", README.index("## Your own network and data\n") + 1)]
    module = re.search(r"`mynet.py`.*?```python\n(.*?)```", section, re.S).group(1)
    toml = re.search(r"`mine.toml`:\n\n```toml\n(.*?)```", section, re.S).group(1)
    (tmp_path / "mynet.py").write_text(module)
    (tmp_path / "mine.toml").write_text(toml)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    commands = re.search(r"```\n(PYTHONPATH=\. kerasgen run .*?)```", section, re.S).group(1)
    run_line = commands.splitlines()[0]
    assert run_line == "PYTHONPATH=. kerasgen run mine.toml --db data/mine.db"
    done = subprocess.run([sys.executable, "-m", "kerasgen", "run", "mine.toml", "--db",
                           "data/mine.db", "--progress", "plain"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = subprocess.run([sys.executable, "-m", "kerasgen", "report", "data/mine.db"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "Table 3" in report.stdout and "mynet" in report.stdout
