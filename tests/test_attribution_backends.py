"""The attribution functions on the JAX and PyTorch backends of Keras, in a subprocess each:
the same known answers (CAM, completeness), weight changes followed, no re-tracing."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import backend_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    from tb_activations.attribution import grad_cam, integrated_gradients, saliency, trace_count
    from tests.test_attribution import cam_model, smooth_model

    model, conv, w = cam_model()
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 2)).astype(np.float32)
    acts = keras.ops.convert_to_numpy(keras.Model(model.inputs, conv.output)([x]))
    for k in range(3):
        maps = grad_cam(model, x, k, layer="conv")
        np.testing.assert_allclose(maps, np.maximum(acts @ w[:, k], 0) / 36, rtol=1e-4, atol=1e-6)
    traces = trace_count(model)
    grad_cam(model, x, "predicted", layer="conv")
    if keras.backend.backend() != "torch":  # eager PyTorch traces nothing: it counts calls
        assert trace_count(model) == traces, (trace_count(model), traces)
    # The variables are passed in: new weights give the new answer.
    model.get_layer("head").set_weights([-w, np.zeros(3, np.float32)])
    np.testing.assert_allclose(
        grad_cam(model, x, 0, layer="conv"), np.maximum(acts @ -w[:, 0], 0) / 36,
        rtol=1e-4, atol=1e-6,
    )
    # (Before smooth_model: keras.utils.set_random_seed imports TensorFlow to seed it.)
    print("tensorflow imported:", "tensorflow" in sys.modules)
    smooth = smooth_model()
    ig = integrated_gradients(smooth, x, [0, 1, 2, 3], steps=64)
    out = keras.ops.convert_to_numpy(smooth(np.concatenate([x, np.zeros_like(x[:1])])))
    expected = out[np.arange(4), [0, 1, 2, 3]] - out[4, [0, 1, 2, 3]]
    np.testing.assert_allclose(ig.sum(axis=(1, 2, 3)), expected, rtol=0.01)
    assert saliency(smooth, x, 1).shape == (4, 6, 6)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_known_answers_on_other_backends(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    env = backend_env(backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    if backend == "jax":
        # Keras on JAX never imports TensorFlow, and neither does attribution.
        assert "tensorflow imported: False" in proc.stdout, proc.stdout
