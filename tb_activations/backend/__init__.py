"""The backend-specific parts of tb_activations, chosen in one place.

Everything that computes is written once in ``keras.ops``; what must differ
per Keras backend lives in one small module each
(:mod:`~tb_activations.backend.tensorflow`, :mod:`~tb_activations.backend.jax`,
:mod:`~tb_activations.backend.torch`):

- :func:`compile_function`: one compiled function per backend's own means
  (``tf.function``; ``jax.jit`` of a stateless call with the model's variables
  passed in, so that weight updates are seen; ``torch.no_grad`` eager calls);
- :func:`to_numpy`: the device-to-host transfer;
- :func:`is_chief`: whether this process writes summaries under distribution.

The framework itself is imported only when that backend is the one Keras runs
on: on JAX and PyTorch nothing here imports TensorFlow.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: The Keras backends tb_activations runs on.
SUPPORTED = ("tensorflow", "jax", "torch")


def current() -> str:
    """The Keras backend in use now (``KERAS_BACKEND`` / ``keras.config.set_backend``).

    Raises:
        ValueError: Keras runs on a backend tb_activations does not support.
    """
    # sys.modules, not this module's own `keras`: set_backend() re-imports Keras.
    keras = sys.modules.get("keras") or importlib.import_module("keras")
    name = keras.config.backend()
    if name not in SUPPORTED:
        raise ValueError(
            f"Unsupported Keras backend {name!r}: tb_activations runs on the backends "
            f"{', '.join(SUPPORTED)} (set KERAS_BACKEND to one of them). Received: backend={name!r}"
        )
    return name


def configured() -> str:
    """The backend Keras runs on or will run on, without importing Keras (nor TensorFlow).

    Keras' own rule: the loaded Keras' backend, else ``KERAS_BACKEND``, else
    ``backend`` in ``$KERAS_HOME/keras.json`` (``~/.keras/keras.json``), else
    ``"tensorflow"``.
    """
    import json
    import os

    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "config"):
        return keras.config.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return str(json.load(f).get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def module(name: str | None = None) -> Any:
    """The module that implements the backend ``name`` (default: :func:`current`)."""
    name = name or current()
    if name not in SUPPORTED:
        raise ValueError(
            f"Invalid value for argument `name`. Expected one of {SUPPORTED}. Received: name={name!r}"
        )
    return importlib.import_module(f"tb_activations.backend.{name}")


def model_backend(model: Any) -> str | None:
    """The backend ``model``'s variables were created on, or ``None`` for a model without any."""
    for variable in getattr(model, "variables", None) or []:
        parts = type(variable).__module__.split(".")
        # keras.src.backend.<name>.core.Variable
        if parts[:3] == ["keras", "src", "backend"] and len(parts) > 3:
            return parts[3]
    return None


def check_keras_model(model: Any) -> None:
    """Check that ``model`` is a Keras 3 model (or layer) of the Keras loaded now.

    Raises:
        TypeError: ``model`` is not (e.g. a ``torch.nn.Module``, a ``tf.keras`` /
            Keras 2 model, a Flax module, a model from before a
            ``keras.config.set_backend()``), naming the supported backends.
    """
    keras = sys.modules.get("keras") or importlib.import_module("keras")
    if isinstance(model, keras.layers.Layer):
        return
    kind = type(model)
    origin = f"{kind.__module__}.{kind.__qualname__}"
    # A Keras object from before a keras.config.set_backend(): set_backend re-imports Keras.
    was_keras = kind.__module__.split(".")[0] == "keras"
    hint = (
        " It comes from Keras before the last keras.config.set_backend(): build the model again."
        if was_keras
        else " Build the model with Keras 3 (keras.Model, keras.Sequential or a keras.Model "
        "subclass); models of other frameworks (torch.nn.Module, tf.keras / Keras 2, Flax) "
        "are not supported."
    )
    raise TypeError(
        f"Expected a Keras model (keras.Model) on one of the Keras backends {SUPPORTED}. "
        f"Received: {kind.__name__} ({origin}).{hint}"
    )


def check_model(model: Any) -> str:
    """Check that ``model`` is a Keras 3 model that runs on the current backend.

    Returns:
        The backend's name.

    Raises:
        TypeError: ``model`` is not a Keras 3 model (e.g. a ``torch.nn.Module``,
            a ``tf.keras`` / Keras 2 model, a Flax module).
        ValueError: The backend is not supported, or ``model`` was built on
            another backend than the one Keras runs on now.
    """
    name = current()
    check_keras_model(model)
    built_on = model_backend(model)
    if built_on is not None and built_on != name:
        raise ValueError(
            f"Model {model.name!r} was built on the {built_on!r} backend but Keras now runs on "
            f"{name!r}: build the model again after switching backends."
        )
    return name


def check_unchanged(name: str) -> None:
    """Raise if Keras' backend is no longer ``name`` (switched after an extractor was built).

    Raises:
        RuntimeError: The backend was switched.
    """
    now = current()
    if now != name:
        raise RuntimeError(
            f"Keras' backend was switched from {name!r} to {now!r} after this logger/extractor "
            "was built. Build the model and the logger again on the new backend."
        )


def compile_function(
    fn: Callable[..., Any],
    *,
    variables: Sequence[Any] = (),
    input_shape: tuple[int | None, ...] | None = None,
    name: str | None = None,
) -> Callable[..., Any]:
    """``fn`` (written in ``keras.ops``) compiled by the backend's own means.

    Args:
        fn: A function of tensors returning a (nested) list of tensors.
        variables: The Keras variables ``fn`` reads (a model's ``variables``):
            on JAX their current values are passed into the compiled function at
            every call, so weight updates are seen (a plain ``jax.jit`` would
            bake them in as constants).
        input_shape: With it, ``fn`` takes one float32 batch ``(N, *input_shape)``
            and is traced once for any ``N`` (TensorFlow: an input signature).
        name: The backend (default: :func:`current`).

    Returns:
        A callable taking numpy arrays or device tensors, returning device tensors.
    """
    return module(name).compile_function(fn, variables=variables, input_shape=input_shape)


def to_numpy(tensor: Any) -> np.ndarray:
    """A device tensor of the current backend as a numpy array (no copy where possible)."""
    return module().to_numpy(tensor)


def is_chief(model: Any = None) -> bool:
    """Whether this process writes summaries under distribution (``True`` without one).

    TensorFlow: ``tf.distribute``'s ``should_save_summary`` of the model's
    strategy. JAX: process 0 (``keras.distribution`` runs one process per
    host). PyTorch: rank 0 of ``torch.distributed`` when it is initialised.
    """
    return module().is_chief(model)
