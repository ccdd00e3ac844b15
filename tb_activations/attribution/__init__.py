"""Attribution: which parts of an input made a classifier answer a class.

One module per method, all on plain arrays, batched over the inputs, each
compiled once per (model, method, layer) and reused (never re-traced per
call or per epoch). The score differentiated is the class logit where the
model ends in a softmax (or sigmoid), the output itself otherwise.

Example:

>>> from tb_activations.attribution import grad_cam
>>> maps = grad_cam(model, images, "predicted")   # (N, h, w) float32 at the last spatial layer
"""

from tb_activations.attribution._target import Explanation, trace_count
from tb_activations.attribution.grad_cam import explain_layer, grad_cam, grad_cam_plus_plus
from tb_activations.attribution.integrated_gradients import (
    explain_integrated_gradients,
    integrated_gradients,
)
from tb_activations.attribution.occlusion import explain_occlusion, occlusion
from tb_activations.attribution.saliency import (
    explain_saliency,
    explain_smoothgrad,
    saliency,
    smoothgrad,
)

__all__ = [
    "Explanation",
    "explain_integrated_gradients",
    "explain_layer",
    "explain_occlusion",
    "explain_saliency",
    "explain_smoothgrad",
    "grad_cam",
    "grad_cam_plus_plus",
    "integrated_gradients",
    "occlusion",
    "saliency",
    "smoothgrad",
    "trace_count",
]
