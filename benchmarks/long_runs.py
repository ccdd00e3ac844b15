"""Long runs stay small and quick to open (issue 15): bytes on disk and TensorBoard's time to open.

Logs ``--steps`` steps (default 100) of VGG16 (``weights=None``, 8 probes at 224
px, the logger's defaults: every conv/pool layer, mosaic + top-5 + overlay,
Grad-CAM, ``images_every="auto"``), measuring the bytes each step adds. If the
``--minutes`` budget runs out first, the rest is extrapolated from the bytes
of the steps written (steps with and without pictures apart) and said so.
Then starts a real ``tensorboard`` (``--load_fast=false`` and ``true``, with
``metadata.SAMPLING_FLAG``) on the log directory and times, from the start of
the process, until the Activations plugin's ``/layers`` lists the last logged
step and the first layer's ``/image`` at its last picture step answers.

Targets: at most 2 GB for 100 steps, at most 30 s to open. One run; the
machine is shared, so the times are noisy.

    python benchmarks/long_runs.py [--steps 100] [--minutes 10] [--images-every auto]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tb_activations import metadata

PORT_LINE = re.compile(r"TensorBoard \S+ at http://127\.0\.0\.1:(\d+)/")
TENSORBOARD = str(Path(sys.executable).with_name("tensorboard"))
ROUTE = "/data/plugin/activations"


def run_bytes(run_dir: str) -> int:
    return sum(os.path.getsize(f) for f in glob.glob(os.path.join(run_dir, "*")))


def write(log_dir: str, steps: int, minutes: float, images_every) -> dict:
    import keras

    from tb_activations import ActivationLogger

    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(weights=None)
    probes = np.random.default_rng(0).integers(0, 256, size=(8, 224, 224, 3), dtype=np.uint8)
    logger = ActivationLogger(model, probes, log_dir, images_every=images_every)
    run_dir = logger.run_dir
    deadline = time.monotonic() + minutes * 60
    added, seconds, pictures = [], [], []
    before = 0
    for step in range(steps):
        due = logger._images_due()
        t0 = time.perf_counter()
        logger.log(step)
        seconds.append(time.perf_counter() - t0)
        size = run_bytes(run_dir)
        added.append(size - before)
        pictures.append(due)
        before = size
        print(
            f"step {step}: {'pictures' if due else 'no pictures'}, +{added[-1] / 1e6:.1f} MB "
            f"in {seconds[-1]:.1f} s (total {size / 1e9:.3f} GB)",
            flush=True,
        )
        if time.monotonic() > deadline and step + 1 < steps:
            break
    logger.close()
    written = len(added)
    total = run_bytes(run_dir)
    with_pics = [b for b, p in zip(added[1:], pictures[1:], strict=True) if p]
    without = [b for b, p in zip(added[1:], pictures[1:], strict=True) if not p]
    # The schedule of the remaining steps, as the logger would apply it.
    rest = [_due(i, images_every) for i in range(written, steps)]
    per_pic = float(np.mean(with_pics)) if with_pics else float(added[0])
    per_plain = float(np.mean(without)) if without else None
    projected = total + sum(per_pic if p else (per_plain or per_pic) for p in rest)
    return {
        "run_dir": run_dir,
        "layers": len(logger.layers),
        "steps_written": written,
        "steps_target": steps,
        "bytes": total,
        "bytes_first_step": added[0],
        "bytes_per_picture_step": per_pic,
        "bytes_per_plain_step": per_plain,
        "picture_steps": sum(pictures) + sum(rest),
        "projected_bytes": projected,
        "seconds_per_picture_step": float(
            np.median([s for s, p in zip(seconds, pictures, strict=True) if p])
        ),
        "seconds_per_plain_step": (
            float(np.median([s for s, p in zip(seconds, pictures, strict=True) if not p]))
            if not all(pictures)
            else None
        ),
        "last_step": written - 1,
        "last_picture_step": max(i for i, p in enumerate(pictures) if p),
    }


def _due(i: int, images_every) -> bool:
    from tb_activations.step_render import images_due

    return images_due(images_every, i)


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.load(response)


def time_to_open(
    log_dir: str, load_fast: bool, last_step: int, picture_step: int, timeout: float
) -> dict:
    """Seconds from starting ``tensorboard`` to the first layer's picture at ``picture_step``."""
    err = tempfile.NamedTemporaryFile("w+", suffix=".err", delete=False)  # noqa: SIM115
    start = time.monotonic()
    proc = subprocess.Popen(
        [
            TENSORBOARD,
            "--logdir",
            log_dir,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            f"--load_fast={'true' if load_fast else 'false'}",
            *metadata.SAMPLING_FLAG.split(),
        ],
        stdout=subprocess.DEVNULL,
        stderr=err,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    out: dict = {"load_fast": load_fast}
    try:
        url = None
        while time.monotonic() - start < timeout:
            match = PORT_LINE.search(Path(err.name).read_text(errors="replace"))
            if match:
                url = f"http://127.0.0.1:{match.group(1)}"
                break
            if proc.poll() is not None:
                raise RuntimeError(Path(err.name).read_text()[-2000:])
            time.sleep(0.2)
        out["listening_s"] = time.monotonic() - start
        while url and time.monotonic() - start < timeout:
            try:
                layers = get_json(
                    f"{url}{ROUTE}/layers?{urlencode({'run': metadata.DEFAULT_RUN_NAME})}"
                )
                if "layers_s" not in out:
                    out["layers_s"] = time.monotonic() - start
                if last_step in layers["logged_steps"]:
                    out.setdefault("latest_layers_s", time.monotonic() - start)
                    first = layers["layers"][0]
                    query = urlencode(
                        {
                            "run": metadata.DEFAULT_RUN_NAME,
                            "tag": first["views"]["mosaic"],
                            "step": picture_step,
                            "index": 0,
                        }
                    )
                    with urllib.request.urlopen(f"{url}{ROUTE}/image?{query}", timeout=60) as r:
                        out["image_bytes"] = len(r.read())
                    out["first_layer_image_s"] = time.monotonic() - start
                    out["first_layer"] = first["layer"]
                    break
            except (urllib.error.URLError, ConnectionError, KeyError):
                pass
            time.sleep(0.25)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.close()
        os.unlink(err.name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="writing budget; the rest is projected"
    )
    parser.add_argument("--images-every", default="auto")
    parser.add_argument("--log-dir", default=None)
    parser.add_argument("--open-timeout", type=float, default=300)
    args = parser.parse_args(argv)
    every = args.images_every if args.images_every == "auto" else int(args.images_every)
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="long_runs_")
    size = write(log_dir, args.steps, args.minutes, every)
    print(json.dumps({k: v for k, v in size.items() if k != "run_dir"}, indent=1))
    gb = size["projected_bytes"] / 1e9
    note = (
        ""
        if size["steps_written"] == args.steps
        else f" (projected from {size['steps_written']} written)"
    )
    print(
        f"bytes on disk, {args.steps} steps, images_every={every!r}: {gb:.2f} GB{note}; target <= 2 GB"
    )
    for load_fast in (False, True):
        opened = time_to_open(
            log_dir, load_fast, size["last_step"], size["last_picture_step"], args.open_timeout
        )
        print(json.dumps(opened))
    return 0


if __name__ == "__main__":
    sys.exit(main())
