"""tb_activations: see inside a CNN while it trains.

Intermediate activations of chosen layers, for a fixed set of probe images,
rendered as mosaics, top-k channel strips and heatmap overlays and written as
TensorBoard summaries, from a Keras callback or a standalone logger.

Examples:
    >>> from tb_activations import Probes, ActivationLogger
    >>> probes = Probes(images)                     # (N, H, W, 3) uint8
    >>> logger = ActivationLogger(model, probes, "logs/run1", layers=["block*_pool"])
    >>> logger.log(step=0)

Public names are imported lazily so that importing the TensorBoard plugin
(``tb_activations.activations_plugin``) never imports TensorFlow or Keras.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ActivationCallback": "tb_activations.callback",
    "ActivationExtractor": "tb_activations.extraction",
    "ActivationLogger": "tb_activations.logger",
    "FeatureVisualization": "tb_activations.feature_vis",
    "LayerExamples": "tb_activations.channel_examples",
    "LayerInfo": "tb_activations.layer_selection",
    "Probes": "tb_activations.probes",
    "ReceptiveField": "tb_activations.receptive_fields",
    "TopExamples": "tb_activations.channel_examples",
    "list_layers": "tb_activations.layer_selection",
    "receptive_field": "tb_activations.receptive_fields",
    "select_layers": "tb_activations.layer_selection",
    "top_examples": "tb_activations.channel_examples",
    "visualize_channels": "tb_activations.feature_vis",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tb_activations' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
