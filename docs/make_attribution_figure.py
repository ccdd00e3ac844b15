"""Make docs/attribution_demo.png: attribution maps of the demo's digit CNN.

Usage: ``python docs/make_attribution_figure.py [EPOCHS]`` (trains the demo CNN,
about a minute on two CPU cores). Rows: Grad-CAM of the demo's probes after the
first and the last epoch, Grad-CAM++ after the last, and Grad-CAM++ of test digits
the trained model gets wrong. Each cell is the logger's overlay pair: the map of the
predicted class over the digit and, where the label differs, the map of the label's
class beside it (else the digit itself).
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent / "attribution_demo.png"


def read(run_dir: str, method: str, step: int):
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={"tensors": 0})
    acc.Reload()

    def at(tag):
        event = next(e for e in acc.Tensors(f"attribution/{method}/{tag}") if e.step == step)
        return tensor_util.make_ndarray(event.tensor_proto)

    images = [Image.open(io.BytesIO(s)).convert("RGB") for s in at("overlay")[2:]]
    return images, at("classes")


def main() -> None:
    import keras

    from tb_activations import ActivationCallback, ActivationLogger, Probes, demo

    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    keras.utils.set_random_seed(0)
    data = demo.load_digits_data(demo.DEFAULT_SIZE, seed=0)
    probes = demo.demo_probes(data)
    model = demo.build_model(demo.DEFAULT_SIZE)
    model.compile("adam", "sparse_categorical_crossentropy")
    methods = ("gradcam", "gradcam_plus_plus")
    with tempfile.TemporaryDirectory() as tmp:
        cb = ActivationCallback(probes, tmp, layers=["pool3"], attribution=methods)
        model.fit(data["x_train"], data["y_train"], epochs=epochs, verbose=0, callbacks=[cb])
        predicted = model.predict(data["x_test"], verbose=0).argmax(axis=1)
        wrong = np.flatnonzero(predicted != data["y_test"])[:4]
        display = (data["x_test"][wrong] * 255).round().astype(np.uint8)
        hard = Probes(
            display, preprocess=lambda a: a / 255.0, labels=data["y_test"][wrong].tolist()
        )
        with ActivationLogger(
            model, hard, tmp, run_name="wrong", layers=["pool3"], attribution=methods
        ) as logger:
            logger.log(epochs - 1)
        last = epochs - 1
        rows = [
            ("Grad-CAM, epoch 0", *read(f"{tmp}/activations", "gradcam", 0)),
            (f"Grad-CAM, epoch {last}", *read(f"{tmp}/activations", "gradcam", last)),
            (f"Grad-CAM++, epoch {last}", *read(f"{tmp}/activations", "gradcam_plus_plus", last)),
            ("Grad-CAM++, misclassified test digits", *read(f"{tmp}/wrong", methods[1], last)),
        ]
    w, h = rows[0][1][0].size
    gap, head = 8, 14
    cols = max(len(r[1]) for r in rows)
    sheet = Image.new("RGB", (cols * (w + gap), len(rows) * (h + 2 * head + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (title, images, classes) in enumerate(rows):
        y = r * (h + 2 * head + gap)
        draw.text((2, y), title, fill="black")
        for c, (img, (pred, label, _)) in enumerate(zip(images, classes)):
            x = c * (w + gap)
            text = f"predicted {int(pred)}" + (f", label {int(label)}" if label >= 0 else "")
            draw.text((x + 2, y + head), text, fill="red" if label >= 0 else "black")
            sheet.paste(img, (x, y + 2 * head))
    sheet.save(OUT)
    print(OUT)


if __name__ == "__main__":
    main()
