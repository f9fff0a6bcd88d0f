"""The Ray backend on a local Ray instance (2 CPUs): same results as the local backend,
a killed worker's pack resumes, a restarted driver submits only what is unfinished."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

ray = pytest.importorskip("ray", reason="the Ray extra is not installed")

from helpers.kernels import assert_same_kernels  # noqa: E402

from kerasgen.options import RunOptions  # noqa: E402
from kerasgen.spec import Spec  # noqa: E402
from kerasgen.store import Store, load_epochs, load_results  # noqa: E402

# Every test here trains real (tiny) networks.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def tiny_spec(name="r", epochs=3, n_train=96):
    return Spec(name=name, models=("resnet8",), datasets=(f"synthetic-8-1-10-{n_train}",),
                batch_sizes=(16, 32), learning_rates=(0.0625, 0.125), epochs=epochs)


def rows(db):
    cols = ["batch_size", "learning_rate", "epoch", "train_loss", "train_accuracy",
            "test_loss", "test_accuracy"]
    return load_epochs(db)[cols].sort_values(cols[:3]).reset_index(drop=True)


def run_local(spec, db, tmp_path):
    from kerasgen.worker import run_study

    run_study(spec, db, RunOptions(pack_size=2, data_dir=str(tmp_path)), progress=False)


@pytest.mark.slow
def test_ray_backend_gives_the_same_results_as_the_local_backend(local_ray, tmp_path):
    from kerasgen.raybackend import run_study_ray

    spec = tiny_spec()
    counts = run_study_ray(spec, tmp_path / "ray.db",
                           RunOptions(pack_size=2, data_dir=str(tmp_path)), progress=False)
    assert counts["done"] == 4
    run_local(spec, tmp_path / "local.db", tmp_path)
    # Every Ray worker process recorded what it trained under, as a local worker does.
    with Store(tmp_path / "ray.db") as store:
        env = store.study_environment(1)
    ray_workers = {k: v for k, v in env.items() if k.startswith("worker ray:")}
    assert ray_workers and all(v["onednn_in_effect"] is not None and v["keras_backend"]
                               for v in ray_workers.values())
    assert_same_kernels(tmp_path / "ray.db", tmp_path / "local.db")
    assert rows(tmp_path / "ray.db").equals(rows(tmp_path / "local.db"))
    ray_best = load_results(tmp_path / "ray.db")["best_test_accuracy"].tolist()
    assert ray_best == load_results(tmp_path / "local.db")["best_test_accuracy"].tolist()
    # The tasks never opened the file: every cell records the Ray device marker and the
    # driver's claim, and all rows arrived through the writer actor.
    assert set(load_results(tmp_path / "ray.db")["status"]) == {"done"}


@pytest.mark.slow
def test_a_ray_worker_killed_mid_pack_is_retried_and_resumes_without_gaps(local_ray, tmp_path):
    from kerasgen.raybackend import run_study_ray

    spec = tiny_spec(name="k", epochs=8, n_train=256)
    db = tmp_path / "killed.db"
    seen: dict = {}
    killed: dict = {}
    resumed: dict = {}
    finished = threading.Event()

    def killed_pid():
        return next(iter(killed.values()))[0]

    def remember(writer, pending):
        seen["writer"] = writer

    def killer():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not finished.is_set():
            writer = seen.get("writer")
            if writer is not None:
                try:
                    running = ray.get(writer.running_packs.remote(), timeout=10)
                except ray.exceptions.GetTimeoutError:  # a loaded machine: ask again
                    continue
                except ray.exceptions.RayActorError:  # the actor is gone: the study ended
                    return
                if not killed:
                    # Kill a pack that has committed epochs, long before its last.
                    for pack_id, (pid, done) in sorted(running.items()):
                        if pid is not None and 1 <= done <= spec.epochs - 3:
                            os.kill(pid, signal.SIGKILL)
                            killed[pack_id] = (pid, done)
                            break
                else:
                    # Then watch for the retry: the same pack, trained by another process.
                    pack_id = next(iter(killed))
                    pid = running.get(pack_id, (None, 0))[0]
                    if pid is not None and pid != killed[pack_id][0]:
                        resumed[pack_id] = pid
                        return
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    counts = run_study_ray(spec, db, RunOptions(pack_size=2, data_dir=str(tmp_path),
                                                max_attempts=3),
                           progress=False, on_submitted=remember)
    finished.set()
    thread.join(timeout=30)
    assert killed, "no worker was killed: the test did not exercise a retry"
    assert counts == {"pending": 0, "running": 0, "done": 4, "diverged": 0, "failed": 0}
    got = rows(db)
    # Every epoch of every cell once: none missing, none duplicated.
    assert len(got) == 4 * spec.epochs
    assert not got.duplicated(["batch_size", "learning_rate", "epoch"]).any()
    run_local(spec, tmp_path / "reference.db", tmp_path)
    assert_same_kernels(db, tmp_path / "reference.db")
    assert got.equals(rows(tmp_path / "reference.db"))
    # The killed pack was resumed by a new process (Ray retried the task).
    assert set(resumed) == set(killed) and resumed[next(iter(killed))] != killed_pid()


def test_a_restarted_driver_submits_only_unfinished_packs(local_ray, tmp_path):
    from kerasgen.raybackend import run_study_ray
    from kerasgen.worker import register_study

    spec = tiny_spec(name="again", epochs=1)
    db = tmp_path / "again.db"
    options = RunOptions(pack_size=2, data_dir=str(tmp_path))
    study_id = register_study(spec, db, options)
    with Store(db) as store:
        # One pack finished by an earlier driver...
        first = store.claim_pack(study_id, "earlier", 2)
        for cell in first.cells:
            store.record_epoch(cell["cell_id"], 0, {"train_loss": 1.0, "test_accuracy": 0.5},
                               claim=first)
            store.finish_cell(cell["cell_id"], "done", claim=first)
        # ...and one it was training when it died (its process no longer exists).
        dead = f"ray-driver:{socket.gethostname()}:{_dead_pid()}"
        orphan = store.claim_pack(study_id, dead, 2)
    submitted: list = []
    run_study_ray(spec, db, options, progress=False,
                  on_submitted=lambda writer, pending: submitted.extend(pending.values()))
    submitted_cells = {c["cell_id"] for claim in submitted for c in claim.cells}
    assert submitted_cells.isdisjoint(first.cell_ids)
    assert set(orphan.cell_ids) <= submitted_cells
    results = load_results(db).set_index("cell_id")
    assert (results["status"] == "done").all()
    # The finished pack was left exactly as it was.
    assert (results.loc[first.cell_ids, "best_test_accuracy"] == 0.5).all()


def test_without_ray_the_backend_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    from kerasgen.raybackend import run_study_ray
    from kerasgen.worker import StudyError

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(StudyError, match=r"pip install 'kerasgen\[ray\]'"):
        run_study_ray(tiny_spec(), tmp_path / "x.db", RunOptions(data_dir=str(tmp_path)))
    assert not (tmp_path / "x.db").exists()


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
