"""Claims about the command line (kerasgen.cli) that need no training. No TensorFlow:
tests/test_architecture.py runs this file where importing it fails."""

from __future__ import annotations

import pytest

from kerasgen import cli
from kerasgen.options import RunOptions


def parse(*argv):
    return cli.build_parser().parse_args(list(argv))


def test_run_options_are_what_the_flags_say():
    args = parse("run", "--preset", "smoke", "--pack-size", "4", "--jit-compile", "off",
                 "--layout", "fused", "--onednn", "off", "--stale-seconds", "30",
                 "--checkpoint-dir", "/tmp/c", "--data-dir", "/tmp/d", "--max-attempts", "5",
                 "--keras-backend", "jax", "--exact")
    assert cli._run_options(args) == RunOptions(
        pack_size=4, jit_compile=False, layout="fused", onednn=False, stale_seconds=30.0,
        checkpoint_dir="/tmp/c", data_dir="/tmp/d", max_attempts=5, keras_backend="jax",
        exact=True)
    # The command line's default backend is auto; the Python API's is tensorflow.
    assert cli._run_options(parse("run")).keras_backend == "auto"
    assert RunOptions().keras_backend == "tensorflow"


@pytest.mark.parametrize("flag, expected", [("auto", "auto"), ("default", None), ("on", True),
                                            ("off", False)])
def test_the_onednn_flag_becomes_the_option(flag, expected):
    assert cli._run_options(parse("run", "--onednn", flag)).onednn == expected


@pytest.mark.parametrize("argv, words", [
    (["run", "--workers", "0"], "--workers: '0': must be an integer >= 1"),
    (["run", "--stale-seconds", "0.2"], "must be a number of seconds >= 1"),
    (["run", "--cpus-per-pack", "-1"], "--cpus-per-pack: '-1': must be a number >= 0"),
    (["tui", "--interval", "0"], "--interval: '0': must be a number of seconds >= 0.1"),
    (["report", "--alpha", "nan"], "--alpha: 'nan': must be a number between 0 and 1"),
    (["report", "--alpha", "5"], "--alpha: '5': must be a number between 0 and 1"),
    (["bound", "--max-examples", "1"], "--max-examples: '1': must be an integer >= 2"),
    (["report", "--metric", "accuracy"], "invalid choice: 'accuracy'"),
    (["report", "--confidence", "95"], "--confidence: '95': must be a number between 0 and 1"),
    (["report", "--permutations", "10"],
     "--permutations: '10': must be a number of permutations >= 99"),
])
def test_a_bad_option_value_exits_2_naming_it(argv, words, capsys):
    with pytest.raises(SystemExit) as caught:
        parse(*argv)
    assert caught.value.code == 2 and words in capsys.readouterr().err


def test_a_spec_file_and_a_preset_together_are_refused(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text('name = "s"\nmodels = ["resnet8"]\ndatasets = ["synthetic"]\n'
                    "batch_sizes = [16]\nlearning_rates = [0.1]\n")
    code = cli.main(["run", str(spec), "--preset", "smoke", "--db", str(tmp_path / "x.db")])
    assert code == 2 and "not both" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()


def test_overriding_name_and_epochs_changes_the_spec(tmp_path):
    args = parse("run", "--preset", "smoke", "--name", "other", "--epochs", "7")
    spec = cli._spec_from_args(args)
    assert spec.name == "other" and spec.epochs == 7 and spec.models == ("resnet8",)


def test_report_on_a_store_without_cells_is_a_message_not_a_traceback(tmp_path, capsys):
    from kerasgen.store import Store

    with Store(tmp_path / "e.db") as store:
        store.create_study("empty", {"name": "empty"}, [])
    assert cli.main(["report", "--db", str(tmp_path / "e.db")]) == 2
    assert "holds no cells" in capsys.readouterr().err


# ---------------------------------------------------------------- exit codes and streams

def _store_with_cells(path, heartbeat=None, worker=None):
    from kerasgen.store import Store

    cells = [{"model": "resnet8", "dataset": "digits", "batch_size": bs, "learning_rate": 0.1,
              "seed": 0} for bs in (16, 32)]
    with Store(path) as store:
        study = store.create_study("s", {"name": "s", "epochs": 3}, cells)
        if worker is not None:
            claim = store.claim_pack(study, worker, 1)
            store.conn.execute("UPDATE cells SET heartbeat_at = ? WHERE pack_id = ?",
                               (heartbeat, claim.pack_id))
    return path


def test_run_without_a_specification_prints_its_usage_and_exits_2(tmp_path, capsys):
    code = cli.main(["run", "--db", str(tmp_path / "x.db")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("usage: kerasgen run")
    assert "give a specification file" in err and "kerasgen demo" in err
    assert not (tmp_path / "x.db").exists()  # it used to train the whole demo here


@pytest.mark.parametrize("command", ["status", "report", "db", "bound"])
@pytest.mark.parametrize("state", ["missing", "empty"])
def test_a_missing_or_empty_store_is_exit_2_for_every_reader(tmp_path, command, state, capsys):
    from kerasgen.store import Store

    db = tmp_path / "s.db"
    if state == "empty":
        Store(db).close()  # a store with no study
    assert cli.main([command, str(db)]) == 2
    assert f"kerasgen {command}: error:" in capsys.readouterr().err


def test_the_store_is_given_as_db_or_by_position_but_not_two_different_ones(tmp_path, capsys):
    db = _store_with_cells(tmp_path / "s.db")
    assert cli.main(["db", str(db)]) == 0 and cli.main(["db", "--db", str(db)]) == 0
    with pytest.raises(SystemExit) as caught:
        cli.main(["db", str(db), "--db", str(tmp_path / "other.db")])
    assert caught.value.code == 2 and "two stores given" in capsys.readouterr().err


def test_a_closed_pipe_ends_the_report_quietly(tmp_path):
    import subprocess
    import sys

    db = _store_with_cells(tmp_path / "s.db")
    run = subprocess.run(f"{sys.executable} -m kerasgen report {db} | head -n 1", shell=True,
                         capture_output=True, text=True, timeout=120)
    assert run.stdout.startswith("# Batch size") and "Traceback" not in run.stderr
    assert "BrokenPipe" not in run.stderr


def test_the_dashboard_on_a_path_that_does_not_exist_says_so_and_exits(tmp_path, capsys):
    from tui.__main__ import main as python_m_tui

    for entry in (lambda a: cli.main(["tui", *a]), python_m_tui):
        assert entry([str(tmp_path / "none.db")]) == 2
        assert "does not exist" in capsys.readouterr().err
    # With a store but no terminal: a message, not escape codes until killed.
    db = _store_with_cells(tmp_path / "s.db")
    assert python_m_tui([str(db)]) == 2
    assert "needs a terminal" in capsys.readouterr().err


def test_a_worker_without_a_heartbeat_is_shown_as_lost_not_training(tmp_path, capsys):
    db = _store_with_cells(tmp_path / "s.db", heartbeat="2020-01-01T00:00:00.000Z",
                           worker="gpu-a.invalid:101")
    assert cli.main(["status", str(db)]) == 0
    out = capsys.readouterr().out
    assert "workers training now: none" in out
    assert "workers lost" in out and "gpu-a.invalid:101" in out


def test_every_default_is_stated_once_in_the_help():
    import re

    from kerasgen.vocabulary import METRICS

    parser = cli.build_parser()
    helps = [parser.format_help()]
    for action in parser._subparsers._group_actions:
        helps += [p.format_help() for p in action.choices.values()]
    for text in helps:
        flat = " ".join(text.split())
        # No option help carries two "(default: ...)".
        for entry in re.split(r"\s(?=--?[a-z])", flat):
            assert entry.count("(default:") <= 1, entry
        assert text.count("exit status:") == 1
    bound = " ".join(cli.build_parser().parse_args(["bound"]).parser.format_help().split())
    assert "(default: <db>.checkpoints)" in bound
    report = cli.build_parser().parse_args(["report"]).parser
    (metric,) = [a for a in report._actions if "--metric" in a.option_strings]
    assert tuple(metric.choices) == METRICS and "best_test_accuracy" not in metric.choices


def test_status_piped_cuts_no_name(tmp_path):
    import os
    import subprocess
    import sys

    from kerasgen.store import Store

    db = tmp_path / "s.db"
    model = "resnet8_with_a_rather_long_registry_name"
    with Store(db) as store:
        store.create_study("a-study-with-a-long-name-too", {"name": "x", "epochs": 1}, [
            {"model": model, "dataset": "digits_of_a_long_data_set_name", "batch_size": 16,
             "learning_rate": 0.1, "seed": 0}])
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    run = subprocess.run([sys.executable, "-m", "kerasgen", "status", str(db)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    assert model in run.stdout and "digits_of_a_long_data_set_name" in run.stdout
    assert "…" not in run.stdout
