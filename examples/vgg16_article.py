"""The article's walkthrough, with tb_activations: VGG16's pooling layers on one image.

Steps (see ../../shared/SEED.md for the original):

1. load one image at VGG16's input size, with VGG16's own ``preprocess_input``;
2. list the 18 conv and pooling layers and their shapes (the input layer is
   never selectable: no "both fed and fetched" crash);
3. log the five pooling layers: a mosaic of *every* channel per layer, the
   top-5 channels by mean, and the strongest channel of ``block5_pool`` laid
   over the image;
4. write the same pictures as PNG files, and print how to open TensorBoard.

Run::

    python examples/vgg16_article.py                        # random weights, offline
    python examples/vgg16_article.py --weights imagenet     # the real thing (downloads 58 MB once)
    python examples/vgg16_article.py --image my_bird.jpg --out out/vgg16

``--quick`` (used by the tests) builds VGG16 for 64x64 inputs, so it runs in seconds.
With random weights the maps show the structure of the image only; with
ImageNet weights they show what the article shows.
"""

from __future__ import annotations

import argparse
import os

import keras

from tb_activations import ActivationLogger, Probes, list_layers
from tb_activations.export import save_pngs
from tb_activations.metadata import tensorboard_command

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default=os.path.join(HERE, "images", "kingfisher.png"))
    parser.add_argument("--weights", default="none", help="'none' (default) or 'imagenet'")
    parser.add_argument("--out", default="out/vgg16_article", help="log and PNG folder")
    parser.add_argument("--quick", action="store_true", help="64x64 inputs (for tests)")
    args = parser.parse_args()
    size = 64 if args.quick else 224  # VGG16's own input size is 224x224

    # 1. The image, resized and preprocessed as VGG16 expects: shape (1, size, size, 3).
    probes = Probes.from_files(
        [args.image],
        target_size=(size, size),
        preprocess=keras.applications.vgg16.preprocess_input,
        names=["image"],
    )
    print("probe input:", probes.inputs.shape)

    # 2. The convolutional base (the dense classifier is irrelevant to the feature maps).
    weights = None if args.weights == "none" else args.weights
    model = keras.applications.VGG16(
        weights=weights, include_top=False, input_shape=(size, size, 3)
    )
    for i, info in enumerate(list_layers(model)):  # the article's table of 18 shapes
        print(f"{i:2d} {info.path:14s} {info.shape}")

    # 3. Log the five pooling layers, top-5 channels by mean, to TensorBoard (step 0).
    #    One step of one image: no drift to measure (that needs steps and several probes).
    log_dir = os.path.join(args.out, "logs")
    with ActivationLogger(
        model, probes, log_dir, layers=["block*_pool"], top_k=5, rank_by="mean", drift=False
    ) as logger:
        records = logger.log(step=0)
        for path, record in records.items():
            dead = int(record.stats.dead.sum())
            channels = record.info.shape[-1]
            print(f"{path}: top-5 channels {record.top[0].tolist()}, {dead}/{channels} all zero")

        # 4. The same views as PNG files: out/<probe>/<layer>_{mosaic,topk,overlay}.png.
        files = save_pngs(
            logger.activations(),
            probes.display,
            probes.names,
            os.path.join(args.out, "png"),
            top_k=5,
            records=records,  # the same scales and top channels as in TensorBoard
        )
    print(f"wrote {len(files)} PNG files under {os.path.join(args.out, 'png')}")
    print(f"view in TensorBoard: {tensorboard_command(log_dir)}")


if __name__ == "__main__":
    main()
