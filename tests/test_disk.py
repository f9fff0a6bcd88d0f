"""What a study leaves on disk: the projection ``kerasgen run`` prints and enforces, the
checkpoints removed when a pack finishes (kept when it fails), the final weights
``--keep-weights`` governs, and ``training.checkpoint_every`` with resume still exact."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
from helpers.kernels import assert_same_kernels

from kerasgen.footprint import dataset_shape, parameter_count, project_disk
from kerasgen.options import RunOptions
from kerasgen.spec import Spec, Training
from kerasgen.store import Store, load_epochs, load_results

ROOT = Path(__file__).resolve().parents[1]


def tiny_spec(name="d", epochs=2, **training) -> Spec:
    return Spec(name=name, models=("resnet8",), datasets=("synthetic-8-1-10-96",),
                batch_sizes=(16, 32), learning_rates=(0.0625, 0.125), epochs=epochs,
                training=Training(**training))


def files_under(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in path.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- the projection

@pytest.mark.parametrize("model, shape, classes", [
    ("resnet8", (8, 8, 1), 10), ("resnet20", (32, 32, 3), 10), ("resnet110", (32, 32, 3), 10),
    ("resnet110", (32, 32, 3), 100), ("vgg19", (32, 32, 3), 10), ("vgg19", (32, 32, 3), 100),
    ("vgg11_nobn_w16", (8, 8, 3), 7), ("vgg13_w8", (5, 7, 2), 3),
])
def test_parameter_counts_from_the_name_equal_the_keras_models(model, shape, classes):
    import numpy as np

    from kerasgen.models import build_model

    net = build_model(model, classes, shape)
    trainable = sum(int(np.prod(v.shape)) for v in net.trainable_variables)
    fixed = sum(int(np.prod(v.shape)) for v in net.non_trainable_variables)
    assert parameter_count(model, shape, classes) == (trainable, fixed)


def test_the_paper_preset_projection_is_the_paper_scale_arithmetic():
    from kerasgen.spec import preset

    spec = preset("paper")
    assert dataset_shape("cifar100") == ((32, 32, 3), 100)
    projection = project_disk(spec, pack_size=20, workers=4)
    vgg = [parameter_count("vgg19", (32, 32, 3), c) for c in (10, 100)]
    resnet = [parameter_count("resnet110", (32, 32, 3), c) for c in (10, 100)]
    # 400 cells of each (model, data set), float32, one file of all weights each.
    assert projection.kept_weights_total == pytest.approx(
        400 * 4 * sum(sum(counts) for counts in vgg + resnet), rel=0.01)
    # A pack of 20 VGG-19 copies for CIFAR-100 (no momentum: no optimizer slots).
    assert projection.checkpoint == pytest.approx(20 * 4 * sum(vgg[1]), rel=0.01)
    assert projection.in_flight == 4 * 2 * projection.checkpoint
    assert project_disk(spec, 20, keep_weights="none").kept_weights_total == 0
    # Half of the cells finished: half of the weights are still to be written.
    half = project_disk(spec, 20, finished_cells=spec.cell_count // 2)
    assert half.kept_weights == pytest.approx(projection.kept_weights_total / 2, rel=1e-6)
    # Momentum adds a slot per trainable parameter; float64 doubles everything.
    momentum = project_disk(Spec(**{**spec.__dict__, "training": Training(momentum=0.9)}), 20)
    assert momentum.checkpoint == pytest.approx(20 * 4 * (sum(vgg[1]) + vgg[1][0]), rel=0.01)
    wide = project_disk(Spec(**{**spec.__dict__, "training": Training(dtype="float64")}), 20)
    assert wide.checkpoint == pytest.approx(2 * projection.checkpoint, rel=0.01)


def test_a_study_refuses_to_start_when_the_disk_is_short_unless_forced(tmp_path, monkeypatch,
                                                                        capsys):
    from kerasgen import worker

    spec = tiny_spec()
    projection = project_disk(spec, pack_size=2)
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(worker.shutil, "disk_usage",
                        lambda path: Usage(10**12, 0, projection.needed - 1))
    with pytest.raises(worker.StudyError, match=r"needs about .* --force"):
        worker.check_disk(spec, tmp_path / "s.db", RunOptions(pack_size=2))
    assert "checkpoints in flight" in capsys.readouterr().err
    worker.check_disk(spec, tmp_path / "s.db", RunOptions(pack_size=2), force=True)
    # Keeping no weights needs less: the same free space is enough then.
    monkeypatch.setattr(worker.shutil, "disk_usage",
                        lambda path: Usage(10**12, 0, projection.in_flight
                                           + projection.initial_weights))
    worker.check_disk(spec, tmp_path / "s.db", RunOptions(pack_size=2, keep_weights="none"))
    with pytest.raises(worker.StudyError):
        worker.check_disk(spec, tmp_path / "s.db", RunOptions(pack_size=2))


def test_kerasgen_run_prints_the_projection_and_refuses_a_study_no_disk_holds(tmp_path):
    spec = tmp_path / "huge.toml"
    # 400 cells of a VGG-19 eight times as wide (1.3 billion parameters): terabytes of
    # final weights.
    spec.write_text('name = "huge"\nmodels = ["vgg19_w512"]\ndatasets = ["synthetic-32-3-10-400"]\n'
                    'batch_sizes = { start = 16, stop = 320, step = 16 }\n'
                    'learning_rates = { start = 0.01, stop = 0.2, step = 0.01 }\nepochs = 1\n')
    db = tmp_path / "huge.db"
    # Decided before anything trains: in a process where TensorFlow cannot be imported.
    code = ("import sys; sys.path.insert(0, 'tests'); import helpers.no_tensorflow; "
            "from kerasgen.cli import main; "
            f"sys.exit(main(['run', {str(spec)!r}, '--db', {str(db)!r}]))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "kerasgen: disk: at most" in run.stderr and "TB" in run.stderr
    assert "--force" in run.stderr and "Traceback" not in run.stderr
    assert not db.exists()  # nothing registered


# ---------------------------------------------------------------- what stays on disk

@pytest.mark.slow
def test_a_finished_pack_leaves_no_checkpoint_and_its_final_weights_as_projected(tmp_path):
    from kerasgen.worker import run_study

    spec = tiny_spec()
    db = tmp_path / "s.db"
    run_study(spec, db, RunOptions(pack_size=2, data_dir=str(tmp_path)), progress=False)
    files = files_under(Path(str(db) + ".checkpoints"))
    assert not [f for f in files if "pack-" in f], files
    weights = {f: size for f, size in files.items() if "/cells/" in f}
    assert len(weights) == spec.cell_count
    projection = project_disk(spec, pack_size=2)
    assert sum(weights.values()) == pytest.approx(projection.kept_weights_total, rel=0.02)
    initial = [size for f, size in files.items() if f.startswith("initial/")]
    assert sum(initial) == pytest.approx(projection.initial_weights, rel=0.02)


@pytest.mark.slow
def test_a_failed_pack_keeps_its_checkpoints_for_the_post_mortem(tmp_path, monkeypatch):
    from kerasgen import train
    from kerasgen.worker import run_study

    real = train.PackLogger.before_write

    def fail_after_second_epoch(self, epoch, rows, diverged):
        real(self, epoch, rows, diverged)
        if epoch == 1 and self.cell_ids[0] == 1:
            raise RuntimeError("simulated crash after epoch 2")

    monkeypatch.setattr(train.PackLogger, "before_write", fail_after_second_epoch)
    db = tmp_path / "s.db"
    counts = run_study(tiny_spec(epochs=3), db,
                       RunOptions(pack_size=2, max_attempts=1, data_dir=str(tmp_path)),
                       progress=False)
    assert counts["failed"] == 2 and counts["done"] == 2
    files = files_under(Path(str(db) + ".checkpoints"))
    packs = {f.split("/")[1] for f in files if "/pack-" in f}
    assert len(packs) == 1, files  # the failed pack's; the finished one's are gone
    state = [f for f in files if "/pack-" in f and f.endswith(".json")]
    meta = json.loads((Path(str(db) + ".checkpoints") / state[0]).read_text())
    failed = load_results(db).query("status == 'failed'")["cell_id"]
    assert sorted(meta["cell_ids"]) == sorted(failed.tolist())
    assert meta["epoch"] == 1


@pytest.mark.slow
def test_keep_weights_none_keeps_no_final_weights_and_says_so(tmp_path):
    from kerasgen.worker import run_study

    db = tmp_path / "s.db"
    run_study(tiny_spec(epochs=1), db,
              RunOptions(pack_size=2, data_dir=str(tmp_path), keep_weights="none"),
              progress=False)
    files = files_under(Path(str(db) + ".checkpoints"))
    assert not [f for f in files if "/cells/" in f or "pack-" in f], files
    assert set(load_results(db)["status"]) == {"done"}
    with Store(db) as store:
        env = json.loads(store.study("d")["environment_json"])
    workers = [v for k, v in env.items() if k.startswith("worker ")]
    assert workers and all(w["keep_weights"] == "none" for w in workers)


# ---------------------------------------------------------------- checkpoint_every

@pytest.mark.slow
def test_checkpoint_every_writes_fewer_checkpoints_and_a_resume_is_still_exact(
        tmp_path, monkeypatch, capsys):
    from kerasgen import checkpoints, train
    from kerasgen.worker import run_study

    options = RunOptions(pack_size=2, data_dir=str(tmp_path))
    spec = tiny_spec(epochs=5, checkpoint_every=3)
    saved: list[int] = []
    real_save = checkpoints.PackCheckpoint.save

    def spy(self, model, meta):
        saved.append(meta["epoch"])
        return real_save(self, model, meta)

    monkeypatch.setattr(checkpoints.PackCheckpoint, "save", spy)
    reference = tmp_path / "reference.db"
    run_study(spec, reference, options, progress=False)
    # Two packs, each checkpointed at epoch 3 (index 2) and at its last epoch only.
    assert saved == [2, 4, 2, 4]

    # The same study, interrupted after epoch 4 is committed (between two checkpoints).
    real_end = train.PackLogger.on_epoch_end

    def interrupt(self, epoch, logs=None):
        real_end(self, epoch, logs)
        if epoch == 3 and not getattr(train, "_interrupted", False):
            train._interrupted = True
            raise KeyboardInterrupt

    monkeypatch.setattr(train.PackLogger, "on_epoch_end", interrupt)
    db = tmp_path / "interrupted.db"
    with pytest.raises(KeyboardInterrupt):
        run_study(spec, db, options, progress=False)
    assert (load_epochs(db)["epoch"] == 3).sum() == 2  # epoch 4 was recorded, not checkpointed
    capsys.readouterr()
    saved.clear()
    run_study(spec, db, options, progress=False)
    # It redid only the epochs since the last checkpoint (index 2), not the pack.
    assert "from epoch 3" in capsys.readouterr().err
    assert saved == [4, 2, 4]
    cols = ["batch_size", "learning_rate", "epoch", "train_loss", "train_accuracy",
            "test_loss", "test_accuracy", "train_eval_loss", "train_eval_accuracy"]

    def table(path):
        return load_epochs(path)[cols].sort_values(cols[:3]).reset_index(drop=True)

    assert_same_kernels(db, reference)
    assert table(db).equals(table(reference))
    assert load_results(db)["test_accuracy"].tolist() == \
        load_results(reference)["test_accuracy"].tolist()
    delattr(train, "_interrupted")
