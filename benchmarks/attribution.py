"""Attribution benchmarks (issue 13), as ratios measured in one run.

Usage: ``python benchmarks/attribution.py`` (several minutes on 2 cores) or
``python benchmarks/attribution.py --quick`` (smaller inputs, to check it runs).

1. Grad-CAM of 8 probes on VGG16 (``weights=None``, with its classifier) at
   ``block5_conv3`` against the bare forward pass of the same probes (one
   traced ``model(x)``); target <= 2.5x. The Keras example's recipe
   (keras.io "Grad-CAM class activation visualization": a ``GradientTape``
   over ``Model(inputs, [conv.output, model.output])``, one image per call,
   eager) does the same job, timed too, and so do tf-explain's ``GradCAM`` and
   tf-keras-vis' ``Gradcam`` where they are installed and run (not dependencies).
2. ``ActivationLogger.log()`` with Grad-CAM against the same logger without
   it (the five pooling layers of VGG16, 8 probes); target <= 1.5x. Grad-CAM
   at the default layer (block5_pool, logged), at block5_conv3 (not logged:
   an extra output of the same extraction pass), in both cases only the
   layers after it run; and with the average drop measured at every log (one
   more forward pass; by default every 10th log).
3. Integrated gradients at 64 steps against 64 batched forward+backward
   passes of the same rows (the same batch size) with a bare ``GradientTape``;
   target <= 1.2x. On a small CNN (8 probes, 512 rows) and on VGG16 (1 probe).

Timings are medians of repeated runs in this process, after a warm-up call
(tracing excluded); the machine is shared and noisy: compare the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up: traces, allocations
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def keras_example_grad_cam(model, images, layer_name):
    """The Keras example's ``make_gradcam_heatmap``, one image per call, as users copy it."""
    import keras
    import tensorflow as tf

    grad_model = keras.Model(model.inputs, [model.get_layer(layer_name).output, model.output])
    heatmaps = []
    for i in range(len(images)):
        with tf.GradientTape() as tape:
            last_conv_layer_output, preds = grad_model([images[i : i + 1]])
            pred_index = tf.argmax(preds[0])
            class_channel = preds[:, pred_index]
        grads = tape.gradient(class_channel, last_conv_layer_output)
        pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
        heatmap = tf.squeeze(last_conv_layer_output[0] @ pooled_grads[..., tf.newaxis])
        heatmaps.append(tf.maximum(heatmap, 0) / tf.math.reduce_max(heatmap))
    return heatmaps


def bare_forward(model):
    import tensorflow as tf

    return tf.function(lambda x: model(x, training=False), autograph=False, reduce_retracing=True)


def bare_forward_backward(model):
    """One batched forward+backward of the summed first logit by the input (a GradientTape)."""
    import tensorflow as tf

    @tf.function(autograph=False, reduce_retracing=True)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = model(x, training=False)
            score = tf.reduce_sum(y[:, 0])
        return tape.gradient(score, x)

    return step


def other_tools(vgg, x, layer_name, repeat, t_fwd):
    """Rows for the same Grad-CAM job done by tf-explain and tf-keras-vis, where they run.

    Neither is a dependency: ``pip install tf-explain opencv-python-headless tf-keras-vis``
    to time them (tf-explain imports OpenCV without declaring it).
    """
    rows = []

    def attempt(label, make):
        try:
            job = make()
            t = median_time(job, repeat)
            rows.append((label, t, t / t_fwd, ""))
        except Exception as err:  # a tool that does not run here is reported, not fatal
            rows.append(
                (f"{label}: does not run ({type(err).__name__}: {str(err)[:120]})", 0, 0, "")
            )

    def tf_explain():
        from tf_explain.core.grad_cam import GradCAM

        # One class for the whole batch (its API); it differentiates through the softmax.
        return lambda: GradCAM().explain((x, None), vgg, class_index=0, layer_name=layer_name)

    def tf_keras_vis():
        from tf_keras_vis.gradcam import Gradcam
        from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
        from tf_keras_vis.utils.scores import CategoricalScore

        gradcam = Gradcam(vgg, model_modifier=ReplaceToLinear(), clone=True)
        score = CategoricalScore([0] * len(x))
        return lambda: gradcam(score, x, penultimate_layer=layer_name)

    attempt(f"tf-explain 0.3.1 GradCAM.explain at {layer_name}", tf_explain)
    attempt(f"tf-keras-vis 0.8.7 Gradcam at {layer_name} (linear head)", tf_keras_vis)
    return rows


def small_cnn():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs: check it runs")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--part",
        choices=("all", "functions", "logger", "ig"),
        default="all",
        help="run one workload only (default: all)",
    )
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from tb_activations import ActivationLogger
    from tb_activations.attribution import grad_cam, integrated_gradients

    size = 64 if args.quick else 224
    rng = np.random.default_rng(0)
    rows = []

    keras.utils.set_random_seed(0)
    vgg = keras.applications.VGG16(weights=None, input_shape=(size, size, 3))
    x = rng.uniform(-120, 120, (8, size, size, 3)).astype(np.float32)
    if args.part in ("all", "functions"):
        fwd = bare_forward(vgg)
        t_fwd = median_time(lambda: fwd(x), args.repeat)
        t_cam = median_time(lambda: grad_cam(vgg, x, "predicted", "block5_conv3"), args.repeat)
        t_recipe = median_time(
            lambda: keras_example_grad_cam(vgg, x, "block5_conv3"), max(1, args.repeat - 1)
        )
        rows.append(("VGG16, 8 probes: bare forward", t_fwd, 1.0, ""))
        rows.append(("grad_cam at block5_conv3", t_cam, t_cam / t_fwd, "<= 2.5"))
        rows.append(("Keras example recipe (per image, eager)", t_recipe, t_recipe / t_fwd, ""))
        rows.extend(other_tools(vgg, x, "block5_conv3", max(1, args.repeat - 1), t_fwd))

    images = rng.integers(0, 256, (8, size, size, 3), dtype=np.uint8)
    if args.part in ("all", "logger"):
        with tempfile.TemporaryDirectory() as tmp:
            loggers = {
                "log(), 5 pooling layers, no attribution": {"attribution": ()},
                # The default layer, block5_pool, is extracted: only the head runs for it.
                "log() with Grad-CAM (default layer, block5_pool)": {"attribution": ("gradcam",)},
                "log() with Grad-CAM at block5_conv3 (not logged)": {
                    "attribution": ("gradcam",),
                    "attribution_layer": "block5_conv3",
                },
                # The average drop (one more forward) at every log, not every 10th.
                "log() with Grad-CAM + average drop (attribution_every=1)": {
                    "attribution": ("gradcam",),
                    "attribution_every": 1,
                },
            }
            built = {
                label: ActivationLogger(vgg, images, f"{tmp}/{i}", layers=["block*_pool"], **kw)
                for i, (label, kw) in enumerate(loggers.items())
            }
            for logger in built.values():
                logger.log(0)  # warm-up: traces, the probe images
            # Interleaved, one step of each logger in turn: on a shared machine all four
            # see the same load, so their ratios hold even when the seconds drift.
            times: dict[str, list[float]] = {label: [] for label in built}
            for step in range(1, 2 * args.repeat + 2):
                for label, logger in built.items():
                    t = time.perf_counter()
                    logger.log(step)
                    times[label].append(time.perf_counter() - t)
            base = None
            for label, logger in built.items():
                logger.close()
                t = statistics.median(times[label])
                base = t if base is None else base
                rows.append((label, t, t / base, "" if t is base else "<= 1.5"))

    for name, model, probes in [
        ("small CNN 32x32, 8 probes", small_cnn(), 8),
        (f"VGG16 {size}x{size}, 1 probe", vgg, 1),
    ]:
        if args.part not in ("all", "ig"):
            break
        shape = model.inputs[0].shape[1:]
        xi = rng.uniform(0, 1, (probes, *shape)).astype(np.float32)
        batch = 32
        step = bare_forward_backward(model)
        paths = np.repeat(xi, 64, axis=0)

        def reference(paths=paths, step=step, batch=batch):
            for s in range(0, len(paths), batch):
                step(paths[s : s + batch])

        repeat = args.repeat if probes > 1 or args.quick else 1
        t_ref = median_time(reference, repeat)
        t_ig = median_time(
            lambda m=model, xi=xi, b=batch: integrated_gradients(m, xi, 0, steps=64, batch_size=b),
            repeat,
        )
        rows.append((f"{name}: 64 x fwd+bwd, batch {batch}", t_ref, 1.0, ""))
        rows.append(("integrated_gradients, 64 steps", t_ig, t_ig / t_ref, "<= 1.2"))

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, input {size}x{size}")
    print("| workload | seconds | ratio | target |")
    print("|---|---|---|---|")
    for label, seconds, ratio, target in rows:
        print(f"| {label} | {seconds:.3f} | {ratio:.2f}x | {target} |")


if __name__ == "__main__":
    main()
