"""Transfer learning: watch layers *inside* a keras.applications backbone.

A MobileNetV2 backbone is nested as one layer of a Sequential model with a
new classifier head. Its own layers are reached by path, ``outer/inner``, and
globs work on paths: ``"mobilenetv2*/block_*_expand_relu"`` picks the
expansion activations of every inverted-residual block. Run
``tb-activations layers mobilenet_v2`` to see all paths.

The data are drawn here (no download): coloured discs (class 0) or squares
(class 1). Run::

    python examples/transfer_learning.py                      # random backbone weights
    python examples/transfer_learning.py --weights imagenet   # pretrained (downloads once)

``--quick`` (used by the tests) uses 96x96 images, few of them, and one epoch.
"""

from __future__ import annotations

import argparse

import keras
import numpy as np

from tb_activations import ActivationCallback, Probes, list_layers, select_layers
from tb_activations.metadata import tensorboard_command


def shapes(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 RGB images (n, size, size, 3) of a disc (0) or a square (1), and labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    x = rng.integers(0, 60, size=(n, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 2, size=n)
    for img, label in zip(x, y):
        cy, cx = rng.integers(size // 4, 3 * size // 4, size=2)
        r = rng.integers(size // 8, size // 4)
        mask = (
            (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            if label == 0
            else (abs(yy - cy) < r) & (abs(xx - cx) < r)
        )
        img[mask] = rng.integers(120, 256, size=3)
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default="none", help="'none' (default) or 'imagenet'")
    parser.add_argument("--log-dir", default="out/transfer_learning")
    parser.add_argument(
        "--quick", action="store_true", help="96x96, 64 images, 1 epoch (for tests)"
    )
    args = parser.parse_args()
    size, n, epochs = (96, 64, 1) if args.quick else (160, 512, 4)

    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNetV2(
        input_shape=(size, size, 3),
        include_top=False,
        weights=None if args.weights == "none" else args.weights,
    )
    backbone.trainable = False  # only the new head learns
    model = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Rescaling(
                1 / 127.5, offset=-1, name="to_unit_range"
            ),  # MobileNetV2's preprocessing
            backbone,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax", name="head"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])

    # The backbone's layers are listed under its name (e.g. mobilenetv2_1.00_96/...).
    pattern = "mobilenetv2*/block_*_expand_relu"
    selected = select_layers(model, [pattern])
    print(f"{len(list_layers(model))} selectable layers; {pattern!r} selects:")
    for info in selected:
        print(f"  {info.path} {info.shape}")

    x, y = shapes(n, size)
    # 8 probes: enough CKA samples for the drift curves (see docs/guide/drift.md).
    px, py = shapes(8, size, seed=1)
    probes = Probes(px, names=[f"probe_{i}" for i in range(8)], labels=[int(v) for v in py])

    model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=16,
        verbose=2,
        callbacks=[
            ActivationCallback(probes, args.log_dir, layers=[pattern], top_k=4),
            keras.callbacks.TensorBoard(args.log_dir),
        ],
    )
    print(f"view in TensorBoard: {tensorboard_command(args.log_dir)}")


if __name__ == "__main__":
    main()
