"""ActivationCallback under tf.distribute: MirroredStrategy and MultiWorkerMirroredStrategy.

Each training process runs ``tests/distributed_worker.py`` in a subprocess:
logical devices must be configured before TensorFlow initialises them, and a
multi-worker cluster needs one process per worker. Every subprocess has a
timeout and is killed in ``finally``, so a hang fails the test instead of CI.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tb_activations.callback import _should_write
from tests.conftest import read_run, steps_of

# tf.distribute is TensorFlow's own: on JAX and PyTorch, tests/test_backends.py runs
# keras.distribution.DataParallel and torch.distributed instead.
pytestmark = pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow",
    reason="tf.distribute needs the TensorFlow backend (other backends: tests/test_backends.py)",
)

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = WORKER.parent.parent
TIMEOUT = 150  # seconds for a whole cluster; a normal run takes 15-30 s on 2 cores
EPOCHS, BATCHES = 3, 4  # as in distributed_worker.py
COLLECTIVE_OPS = ("Collective", "NcclAllReduce", "AllReduce")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.update(extra)
    return env


def _run(commands: list[tuple[list[str], dict[str, str]]], tmp_path: Path) -> list[str]:
    """Start every command at once, wait for all (``TIMEOUT`` in all), kill what is left."""
    procs, logs = [], []
    try:
        for i, (argv, env) in enumerate(commands):
            log = open(tmp_path / f"proc{i}.log", "w+")  # noqa: SIM115  (closed in finally)
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(WORKER), *argv],
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for p in procs:
            p.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a training process hung for more than {TIMEOUT} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
        outputs = []
        for log in logs:
            log.seek(0)
            outputs.append(log.read())
            log.close()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-4000:]
    return outputs


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _check_runs(log_dir: Path, writer_pid: int) -> None:
    """Exactly the two runs, one event file each, from ``writer_pid``, with every step."""
    assert sorted(p.name for p in log_dir.iterdir()) == ["activations", "batches"]
    for run in ("activations", "batches"):
        files = list((log_dir / run).iterdir())
        assert len(files) == 1, files
        assert f".{writer_pid}." in files[0].name
    acc = read_run(log_dir / "activations")
    for tag in ("conv1/mosaic", "conv2/topk", "bn1/overlay", "pool1/channel_stats"):
        assert steps_of(acc, tag) == list(range(EPOCHS)), tag
    acc = read_run(log_dir / "batches")
    assert steps_of(acc, "pool1/mosaic") == list(range(3, EPOCHS * BATCHES + 1, 3))


def test_mirrored_strategy_two_logical_cpus(tmp_path):
    log_dir = tmp_path / "logs"
    _run([(["mirrored", str(log_dir), str(tmp_path / "r.json")], _env())], tmp_path)
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["replicas"] == 2 and result["components"] == 2
    assert result["writes"] == [True, True] and result["failures"] == 0
    _check_runs(log_dir, result["pid"])
    # The extraction reads the first replica's weights: the second one was
    # perturbed after fit, and the logged pass still equals the first's.
    assert result["first_replica_max_diff"] < 1e-5
    assert result["second_replica_max_diff"] > 1e-2
    assert not [t for t in result["op_types"] if t.startswith(COLLECTIVE_OPS)]


def test_multi_worker_mirrored_strategy_only_the_chief_writes(tmp_path):
    log_dir = tmp_path / "logs"
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    commands = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        argv = ["multiworker", str(log_dir), str(tmp_path / f"r{index}.json")]
        commands.append((argv, _env(TF_CONFIG=tf_config)))
    _run(commands, tmp_path)
    chief, worker = (json.loads((tmp_path / f"r{i}.json").read_text()) for i in range(2))
    assert chief["replicas"] == worker["replicas"] == 2
    assert chief["writes"] == [True, True] and worker["writes"] == [False, False]
    assert chief["writer_opened"] == [True, True] and worker["writer_opened"] == [False, False]
    assert chief["failures"] == worker["failures"] == 0
    _check_runs(log_dir, chief["pid"])
    assert chief["first_replica_max_diff"] < 1e-5
    # Called outside strategy.run, the extraction has no collective op to
    # wait on: the worker that skips it cannot leave the chief hanging.
    assert not [t for t in chief["op_types"] if t.startswith(COLLECTIVE_OPS)]
    assert len(chief["epoch_seconds"]) == len(worker["epoch_seconds"]) == EPOCHS


def test_should_write_without_a_strategy_or_backend_support():
    class NoStrategy:
        pass

    class Extended:
        @property
        def should_save_summary(self):
            raise NotImplementedError

    class Strategy:
        extended = Extended()

    class Model:
        distribute_strategy = Strategy()

    assert _should_write(NoStrategy()) is True
    assert _should_write(Model()) is True
