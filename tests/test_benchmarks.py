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
