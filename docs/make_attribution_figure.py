"""Make docs/attribution_demo.png: the demo's Grad-CAM overlays, first and last epoch.

Usage: ``python docs/make_attribution_figure.py [EPOCHS]`` (runs the demo, about a
minute on two CPU cores). Per digit probe, each cell is the logger's overlay pair:
the map of the predicted class over the probe, and beside it the map of the label's
class where the prediction is wrong (else the probe itself).
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent / "attribution_demo.png"


def overlays(run_dir: str, step: int) -> tuple[list[Image.Image], np.ndarray]:
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={"tensors": 0})
    acc.Reload()
    event = next(e for e in acc.Tensors("attribution/gradcam/overlay") if e.step == step)
    strings = tensor_util.make_ndarray(event.tensor_proto)
    images = [Image.open(io.BytesIO(s)).convert("RGB") for s in strings[2:]]
    classes = next(e for e in acc.Tensors("attribution/gradcam/classes") if e.step == step)
    return images, tensor_util.make_ndarray(classes.tensor_proto)


def main() -> None:
    from tb_activations.demo import run_demo

    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    with tempfile.TemporaryDirectory() as tmp:
        run_demo(tmp, epochs=epochs, progress=None)
        rows = [(f"epoch {s}", *overlays(f"{tmp}/activations", s)) for s in (0, epochs - 1)]
    w, h = rows[0][1][0].size
    gap, head = 6, 14
    cols = len(rows[0][1])
    sheet = Image.new("RGB", (cols * (w + gap), len(rows) * (h + 2 * head)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (title, images, classes) in enumerate(rows):
        y = r * (h + 2 * head)
        draw.text((2, y), title, fill="black")
        for c, (img, (pred, label, _)) in enumerate(zip(images, classes)):
            x = c * (w + gap)
            text = f"{int(pred)}" + (f" (label {int(label)})" if label >= 0 else "")
            draw.text((x + 2, y + head), text, fill="red" if label >= 0 else "black")
            sheet.paste(img, (x, y + 2 * head))
    sheet.save(OUT)
    print(OUT)


if __name__ == "__main__":
    main()
