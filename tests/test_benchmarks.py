"""The benchmark script keeps running (figures themselves are not asserted: timing is for benchmarks)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_quick_benchmark_prints_the_table():
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "run.py"),
            "--quick",
            "--no-alternatives",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| workload | measured | ratio | event data |" in out.stdout
    assert "5 pooling layers" in out.stdout and "callback, small CNN" in out.stdout


def test_dashboard_scale_benchmark_runs_small():
    """benchmarks/dashboard_scale.py at a tiny size: every route answers 200 under both loaders."""
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "dashboard_scale.py"),
            *("--steps", "3", "--layers", "2", "--probes", "2", "--loader", "both"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert "| interaction | route |" in out.stdout, out.stderr[-2000:]
    assert out.stdout.count("`/channel`") == 2 and out.stdout.count("[200]") == 2 * 11
    assert "[404]" not in out.stdout and "[500]" not in out.stdout
