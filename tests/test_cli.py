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
                 "--checkpoint-dir", "/tmp/c", "--data-dir", "/tmp/d", "--max-attempts", "5")
    assert cli._run_options(args) == RunOptions(
        pack_size=4, jit_compile=False, layout="fused", onednn=False, stale_seconds=30.0,
        checkpoint_dir="/tmp/c", data_dir="/tmp/d", max_attempts=5)


@pytest.mark.parametrize("flag, expected", [("auto", "auto"), ("default", None), ("on", True),
                                            ("off", False)])
def test_the_onednn_flag_becomes_the_option(flag, expected):
    assert cli._run_options(parse("run", "--onednn", flag)).onednn == expected


@pytest.mark.parametrize("argv, words", [
    (["run", "--workers", "0"], "--workers: '0': must be an integer >= 1"),
    (["run", "--stale-seconds", "0.2"], "must be a number of seconds >= 1"),
    (["run", "--cpus-per-pack", "-1"], "--cpus-per-pack: '-1': must be a number >= 0"),
    (["tui", "--interval", "0"], "--interval: '0': must be a number of seconds >= 0.1"),
    (["report", "--alpha", "nan"], "--alpha: 'nan': must be a positive number"),
    (["bound", "--max-examples", "1"], "--max-examples: '1': must be an integer >= 2"),
    (["report", "--metric", "accuracy"], "invalid choice: 'accuracy'"),
    (["report", "--confidence", "95"], "--confidence: '95': must be a number between 0 and 1"),
    (["report", "--resamples", "10"], "--resamples: '10': must be a number of resamples >= 99"),
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
