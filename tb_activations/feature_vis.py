"""Feature visualization: an input optimised to excite one channel.

Gradient ascent on a channel's mean activation, with what makes the result
readable (Olah et al., "Feature Visualization", Distill 2017):

- *Parameterisation*: the image is a Fourier spectrum per colour channel,
  scaled by ``1 / frequency`` so that every frequency starts with equal energy
  (steepest ascent in pixel space piles up high frequencies); its colours are
  decorrelated with the square root of ImageNet's colour covariance, and a
  sigmoid keeps pixels in ``[0, 1]``.
- *Transformation robustness*: every step sees the image jittered, scaled and
  rotated at random (one affine resampling), so the optimum cannot rely on
  pixel-exact patterns.

One image per channel, all channels of a batch optimised together by one
traced step function. The math (image, transformations, objective, Adam) is
written once in ``keras.ops``; only the gradient and the compilation differ
per backend: a ``tf.function`` around a ``GradientTape`` (TensorFlow), a
``jax.jit`` of ``jax.value_and_grad`` with the network's variables passed in
(JAX), eager ``torch.autograd.grad`` (PyTorch).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from tb_activations.layer_selection import LayerInfo, list_layers, select_layers

#: Square root of the colour covariance of ImageNet photographs (RGB), the
#: figures published with Lucid (Olah et al. 2017), columns normalised below.
COLOR_CORRELATION_SQRT = np.array(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32
)


@dataclass(frozen=True)
class FeatureVisualization:
    """What :func:`visualize_channels` returns (plain numpy).

    Attributes:
        layer: Layer path.
        channels: int64 ``(n,)``: the channels, in the order of ``images``.
        images: uint8 ``(n, H, W, 3)`` (``(n, H, W, 1)`` for a grey model input).
        objective: float32 ``(n,)``: each channel's mean activation on its
            final image, untransformed.
        history: float32 ``(steps, n)``: the objective at every step, on the
            transformed image that step optimised.
    """

    layer: str
    channels: np.ndarray
    images: np.ndarray
    objective: np.ndarray
    history: np.ndarray


def visualize_channels(
    model: Any,
    layer: str | LayerInfo,
    channels: Sequence[int] | int,
    *,
    steps: int = 256,
    size: int | tuple[int, int] | None = None,
    learning_rate: float = 0.05,
    batch_size: int = 32,
    jitter: int = 8,
    scale: tuple[float, float] = (0.9, 1.1),
    rotate: float = 10.0,
    decorrelate: bool = True,
    input_range: tuple[float, float] = (0.0, 1.0),
    preprocess: Callable[[Any], Any] | None = None,
    seed: int = 0,
) -> FeatureVisualization:
    """Images that maximise the mean activation of ``channels`` of ``layer``.

    Args:
        model: A Functional or Sequential Keras model taking images (1 or 3 channels).
        layer: Layer name or path; its output must have channels last after
            the extractor's standardisation (``(H, W, C)`` or ``(C,)``).
        channels: Channel indices (or one index).
        steps: Adam steps. Defaults to 256.
        size: ``(H, W)`` (or one int) of the images. Defaults to the model's
            input size, or 128 where it is not fixed.
        learning_rate: Adam's step size on the spectrum. Defaults to 0.05.
        batch_size: Channels optimised together. Defaults to 32.
        jitter: Largest random shift, in pixels. Defaults to 8.
        scale: Range of the random zoom. Defaults to ``(0.9, 1.1)``.
        rotate: Largest random rotation, in degrees. Defaults to 10.
        decorrelate: Decorrelate colours (3-channel inputs). Defaults to ``True``.
        input_range: What the model expects for black and white: images in
            ``[0, 1]`` are mapped to ``[lo, hi]`` before ``preprocess``.
            Defaults to ``(0, 1)``.
        preprocess: A ``keras.ops`` function applied to the mapped images,
            e.g. ``keras.applications.vgg16.preprocess_input`` with
            ``input_range=(0, 255)``. Defaults to ``None``.
        seed: Seed of the initial spectrum and the transformations. Defaults to 0.

    Returns:
        A :class:`FeatureVisualization`.

    Raises:
        ValueError: for a bad channel, step count or size, a model input
            that is not an image, or a subclassed model.
    """
    info = layer if isinstance(layer, LayerInfo) else _resolve(model, layer)
    chans = np.atleast_1d(np.asarray(channels))
    _check_int("steps", steps, 1)
    _check_int("batch_size", batch_size, 1)
    n_channels = _channel_count(info)
    if chans.ndim != 1 or chans.size == 0 or chans.dtype.kind not in "iu":
        raise ValueError(
            "Invalid value for argument `channels`. Expected a non-empty list of channel indices. "
            f"Received: channels={channels!r}"
        )
    bad = [int(c) for c in chans if not 0 <= c < (n_channels or np.iinfo(np.int64).max)]
    if bad:
        raise ValueError(
            f"Invalid value for argument `channels`: {bad} out of range; layer {info.path!r} "
            f"has {n_channels} channels (0..{n_channels - 1})."
        )
    h, w, c = _image_shape(model, size)
    backend = keras.backend.backend()
    if backend not in _RUNNER_MAKERS:
        raise NotImplementedError(
            "visualize_channels needs gradients: the tensorflow, jax or torch backend of Keras. "
            f"Received the {backend!r} backend."
        )
    n = min(batch_size, chans.size)
    rng = np.random.default_rng(seed)
    lo, hi = (float(v) for v in input_range)
    # Built once per model and settings: a callback calling this every N epochs reuses
    # the sub-model and the traced step (the step reads the current weights).
    key = (backend, info.path, info.channels_first, (n, c, h, w), decorrelate, lo, hi)
    key += (preprocess, float(learning_rate))
    runners = _RUNNERS.setdefault(model, {})
    runner = runners.get(key)
    if runner is None:
        runner = runners[key] = _make_runner(model, info, key, preprocess, learning_rate)
    images, objectives, histories = [], [], []
    for start in range(0, chans.size, n):
        batch = chans[start : start + n]
        padded = np.resize(batch, n)  # the last batch repeats channels: one traced shape
        onehot = np.eye(n_channels or int(padded.max()) + 1, dtype=np.float32)[padded]
        runner.reset(0.01 * rng.standard_normal((2, n, c, h, w)).astype(np.float32))
        history = []
        for t in range(1, steps + 1):
            transforms = _random_transforms(rng, n, h, w, jitter, scale, rotate)
            history.append(runner.step(t, transforms, onehot))
        img, value = runner.final(onehot)
        k = batch.size
        images.append(np.asarray(img)[:k])
        objectives.append(np.asarray(value)[:k])
        histories.append(np.stack(history)[:, :k])
    pixels = np.concatenate(images)
    return FeatureVisualization(
        layer=info.path,
        channels=chans.astype(np.int64),
        images=np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8),
        objective=np.concatenate(objectives).astype(np.float32),
        history=np.concatenate(histories, axis=1).astype(np.float32),
    )


# model -> {settings: _Runner}; weak keys: the cache keeps no model alive.
_RUNNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _make_runner(model: Any, info: LayerInfo, key: tuple, preprocess: Any, lr: float) -> _Runner:
    """The sub-model to ``info``'s output and the backend's traced optimisation step."""
    from tb_activations.autodiff import layer_model

    backend, _, channels_first, (n, c, h, w), decorrelate, lo, hi = key[:7]
    forward = layer_model(model, [info.path])
    basis = _fourier_scale(h, w)
    color = _color_matrix(c, decorrelate)

    def to_image(spec: Any) -> Any:
        return _image(spec, basis, color)

    def objective(images: Any, onehot: Any, call: Any = None) -> Any:
        """Per image, the mean activation of its channel; ``call`` runs the network."""
        x = lo + (hi - lo) * images
        if preprocess is not None:
            x = preprocess(x)
        out = forward(x, training=False) if call is None else call(x)
        return _channel_mean(out, onehot, channels_first)

    def transformed(spec: Any, transforms: Any) -> Any:
        return keras.ops.image.affine_transform(
            to_image(spec), transforms, interpolation="bilinear", fill_mode="reflect"
        )

    make = _RUNNER_MAKERS[backend]
    return make(forward, (2, n, c, h, w), to_image, transformed, objective, lr)


# -- the optimisation, per backend (only the gradient and the compilation differ) ---

B1, B2, EPS = 0.9, 0.999, 1e-8  # Adam (Kingma & Ba 2015)


def _adam(spec: Any, m: Any, v: Any, grad: Any, t: Any, lr: float) -> tuple[Any, Any, Any]:
    """One Adam step on the spectrum (``keras.ops``): the new ``(spec, m, v)``."""
    ops = keras.ops
    m = B1 * m + (1 - B1) * grad
    v = B2 * v + (1 - B2) * grad * grad
    m_hat = m / (1 - B1**t)
    v_hat = v / (1 - B2**t)
    return spec - lr * m_hat / (ops.sqrt(v_hat) + EPS), m, v


class _Runner:
    """``reset(spectrum)``, ``step(t, transforms, onehot) -> values``, ``final(onehot)``."""


def _tf_runner(forward, shape, to_image, transformed, objective, lr) -> _Runner:
    """TensorFlow: variables, one ``tf.function`` step around a ``GradientTape``."""
    import tensorflow as tf

    spectrum = tf.Variable(tf.zeros(shape), trainable=False)
    m = tf.Variable(tf.zeros(shape), trainable=False)
    v = tf.Variable(tf.zeros(shape), trainable=False)

    def step(t: Any, transforms: Any, onehot: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(spectrum)
            value = objective(transformed(spectrum, transforms), onehot)
            loss = -keras.ops.sum(value)
        grad = tape.gradient(loss, spectrum)
        new, m_new, v_new = _adam(spectrum, m, v, grad, t, lr)
        m.assign(m_new)
        v.assign(v_new)
        spectrum.assign(new)
        return value

    traced = tf.function(step, autograph=False, reduce_retracing=True)
    final = tf.function(lambda onehot: (to_image(spectrum), objective(to_image(spectrum), onehot)))
    runner = _Runner()

    def reset(init: np.ndarray) -> None:
        spectrum.assign(init)
        m.assign(tf.zeros(shape))
        v.assign(tf.zeros(shape))

    runner.reset = reset
    runner.step = lambda t, tr, oh: np.asarray(traced(tf.constant(float(t)), tr, oh))
    runner.final = lambda oh: tuple(np.asarray(x) for x in final(oh))
    return runner


def _jax_runner(forward, shape, to_image, transformed, objective, lr) -> _Runner:
    """JAX: ``jax.jit`` of ``jax.value_and_grad``, the network's variables passed in
    (``stateless_call``), so that the compiled step never bakes the weights in."""
    import jax
    import jax.numpy as jnp

    def call_with(trainable: Any, non_trainable: Any) -> Any:
        return lambda x: forward.stateless_call(trainable, non_trainable, x, training=False)[0]

    def loss(spec: Any, transforms: Any, onehot: Any, trainable: Any, non_trainable: Any):
        value = objective(
            transformed(spec, transforms), onehot, call_with(trainable, non_trainable)
        )
        return -jnp.sum(value), value

    @jax.jit
    def step(spec, m, v, t, transforms, onehot, trainable, non_trainable):
        (_, value), grad = jax.value_and_grad(loss, has_aux=True)(
            spec, transforms, onehot, trainable, non_trainable
        )
        spec, m, v = _adam(spec, m, v, grad, t, lr)
        return spec, m, v, value

    @jax.jit
    def final(spec, onehot, trainable, non_trainable):
        image = to_image(spec)
        return image, objective(image, onehot, call_with(trainable, non_trainable))

    state: dict[str, Any] = {}
    runner = _Runner()

    def variables() -> tuple[list, list]:
        return (
            [x.value for x in forward.trainable_variables],
            [x.value for x in forward.non_trainable_variables],
        )

    def reset(init: np.ndarray) -> None:
        state.update(spec=jnp.asarray(init), m=jnp.zeros(shape), v=jnp.zeros(shape))

    def run_step(t: int, transforms: np.ndarray, onehot: np.ndarray) -> np.ndarray:
        spec, m, v, value = step(
            state["spec"], state["m"], state["v"], float(t), transforms, onehot, *variables()
        )
        state.update(spec=spec, m=m, v=v)
        return np.asarray(value)

    runner.reset = reset
    runner.step = run_step
    runner.final = lambda oh: tuple(np.asarray(x) for x in final(state["spec"], oh, *variables()))
    return runner


def _torch_runner(forward, shape, to_image, transformed, objective, lr) -> _Runner:
    """PyTorch: eager steps with ``torch.autograd.grad``."""
    import torch

    ops = keras.ops
    state: dict[str, Any] = {}
    runner = _Runner()

    def reset(init: np.ndarray) -> None:
        spec = ops.convert_to_tensor(init)
        state.update(spec=spec, m=ops.zeros(shape), v=ops.zeros(shape))

    def run_step(t: int, transforms: np.ndarray, onehot: np.ndarray) -> np.ndarray:
        spec = state["spec"].detach().requires_grad_(True)
        value = objective(
            transformed(spec, ops.convert_to_tensor(transforms)), ops.convert_to_tensor(onehot)
        )
        (grad,) = torch.autograd.grad(-value.sum(), spec)
        with torch.no_grad():
            new, m, v = _adam(spec.detach(), state["m"], state["v"], grad, float(t), lr)
        state.update(spec=new, m=m, v=v)
        return ops.convert_to_numpy(value.detach())

    def final(onehot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            image = to_image(state["spec"])
            value = objective(image, ops.convert_to_tensor(onehot))
        return ops.convert_to_numpy(image), ops.convert_to_numpy(value)

    runner.reset = reset
    runner.step = run_step
    runner.final = final
    return runner


# -- the parameterisation (keras.ops) ---------------------------------------------


def _fourier_scale(h: int, w: int) -> np.ndarray:
    """float32 ``(h, w)``: ``1 / frequency`` (capped at the lowest frequency), times ``sqrt(hw)``.

    With it, a spectrum of unit-variance coefficients gives an image whose
    frequencies all carry the same energy: pink noise, like photographs.
    """
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    freqs = np.sqrt(fx * fx + fy * fy)
    return (np.sqrt(h * w) / np.maximum(freqs, 1.0 / max(h, w))).astype(np.float32)


def _color_matrix(c: int, decorrelate: bool) -> np.ndarray:
    if c != 3 or not decorrelate:
        return np.eye(c, dtype=np.float32)
    norm = np.max(np.linalg.norm(COLOR_CORRELATION_SQRT, axis=0))
    return COLOR_CORRELATION_SQRT / norm


def _image(spec: Any, basis: np.ndarray, color: np.ndarray) -> Any:
    """``(2, n, c, h, w)`` spectrum -> ``(n, h, w, c)`` image in ``(0, 1)``."""
    ops = keras.ops
    scale = ops.convert_to_tensor(basis)
    real, _ = ops.ifft2((spec[0] * scale, spec[1] * scale))
    # The 1/4 keeps the initial pixels in the sigmoid's linear range.
    x = ops.transpose(real, (0, 2, 3, 1)) / 4.0
    x = ops.matmul(x, ops.convert_to_tensor(color.T))
    return ops.sigmoid(x)


def _channel_mean(out: Any, onehot: Any, channels_first: bool) -> Any:
    """Per image ``i``, the mean over positions of channel ``onehot[i]`` of ``out``."""
    ops = keras.ops
    if isinstance(out, (list, tuple)):
        out = out[0]
    rank = len(out.shape)
    if channels_first and rank > 2:
        out = ops.moveaxis(out, 1, -1)
    axes = tuple(range(1, rank - 1))
    means = ops.mean(out, axis=axes) if axes else out
    return ops.sum(means * onehot, axis=-1)


def _random_transforms(
    rng: np.random.Generator,
    n: int,
    h: int,
    w: int,
    jitter: int,
    scale: tuple[float, float],
    rotate: float,
) -> np.ndarray:
    """float32 ``(n, 8)`` projective transforms: random zoom and rotation about the centre, shift.

    Each maps an output pixel ``(x, y)`` to the input pixel it samples, the
    convention of ``keras.ops.image.affine_transform``.
    """
    s = rng.uniform(scale[0], scale[1], n)
    theta = np.deg2rad(rng.uniform(-rotate, rotate, n))
    shift = rng.integers(-jitter, jitter + 1, (n, 2)) if jitter > 0 else np.zeros((n, 2))
    cos, sin = np.cos(theta) / s, np.sin(theta) / s
    cx, cy = (w - 1) / 2, (h - 1) / 2
    # input = M (output - centre) + centre + shift, with M the inverse zoom-rotation.
    a0, a1, b0, b1 = cos, -sin, sin, cos
    a2 = cx - a0 * cx - a1 * cy + shift[:, 0]
    b2 = cy - b0 * cx - b1 * cy + shift[:, 1]
    zeros = np.zeros(n)
    return np.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1).astype(np.float32)


# -- checks ---------------------------------------------------------------------


def _resolve(model: Any, layer: Any) -> LayerInfo:
    if not isinstance(layer, str):
        raise ValueError(
            "Invalid value for argument `layer`. Expected a layer name or path, or a LayerInfo. "
            f"Received: layer={layer!r}"
        )
    matches = select_layers(model, [layer], available=list_layers(model))
    exact = [i for i in matches if i.path == layer]
    return (exact or matches)[0]


def _channel_count(info: LayerInfo) -> int | None:
    shape = info.channels_last_shape
    return None if shape is None or shape[-1] is None else int(shape[-1])


def _image_shape(model: Any, size: Any) -> tuple[int, int, int]:
    from tb_activations.extraction import model_input_shape

    shape = model_input_shape(model)
    if shape is None or len(shape) != 3:
        raise ValueError(
            f"Model {model.name!r} takes inputs of shape {shape}: feature visualization "
            "optimises images (H, W, C)."
        )
    c = shape[-1]
    if c not in (1, 3):
        raise ValueError(
            f"Model {model.name!r} takes images with {c} channels; feature visualization "
            "makes grey (1) or RGB (3) images."
        )
    if size is None:
        h = shape[0] if shape[0] is not None else 128
        w = shape[1] if shape[1] is not None else 128
    else:
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if h < 8 or w < 8:
            raise ValueError(
                f"Invalid value for argument `size`. Expected at least 8 pixels. Received: size={size!r}"
            )
        fixed = [s for s in shape[:2] if s is not None]
        if fixed and (shape[0], shape[1]) != (h, w) and None not in shape[:2]:
            raise ValueError(
                f"Invalid value for argument `size`: model {model.name!r} takes images of "
                f"{shape[0]}x{shape[1]}. Received: size={size!r}"
            )
    return int(h), int(w), int(c)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected an int >= {minimum}. "
            f"Received: {name}={value!r}"
        )


_RUNNER_MAKERS = {"tensorflow": _tf_runner, "jax": _jax_runner, "torch": _torch_runner}
