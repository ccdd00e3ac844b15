"""The TensorBoard "Activations" dashboard: a dynamic plugin.

Installed through the ``tensorboard_plugins`` entry point (see ``setup.cfg``).
TensorBoard imports this module at start-up, so it imports neither
TensorFlow nor Keras, and everything that can fail happens per request.

Every route is a thin wrapper around a pure function of
:mod:`tb_activations.plugin_data`, reading only through
``context.data_provider``; the routes are documented in ``http_api.md``.
Bad or missing parameters answer 400, an unknown run, layer, tag, step or
file 404 (so does foreign or broken data under the plugin's name), and a
data provider that cannot answer yet 503, each with a plain-text message.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from tensorboard import errors, plugin_util
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from tensorboard.util import img_mime_type_detector
from werkzeug import wrappers

from tb_activations import metadata, plugin_data

logger = logging.getLogger(__name__)

_STATIC_MARKER = f"/plugin/{metadata.PLUGIN_NAME}/static/"


class ActivationsPlugin(base_plugin.TBPlugin):
    """Serves the Activations dashboard and the data behind it.

    Args:
        context: A ``base_plugin.TBContext``; only ``data_provider`` is used.
    """

    plugin_name = metadata.PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext) -> None:
        self._data_provider = context.data_provider
        # Reads of whole tags, kept until the tag gets new data (plugin_data.ReadCache).
        self._cache = plugin_data.ReadCache()

    def get_plugin_apps(self) -> dict[str, Callable]:
        return {
            "/index.js": self._serve_index_js,
            "/static/*": self._serve_static,
            "/runs": self._serve_runs,
            "/layers": self._serve_layers,
            "/steps": self._serve_steps,
            "/stats": self._serve_stats,
            "/channel": self._serve_channel,
            "/palette": self._serve_palette,
            "/image": self._serve_image,
            "/scalars": self._serve_scalars,
            "/histogram": self._serve_histogram,
            "/predictions": self._serve_predictions,
            "/examples": self._serve_examples,
            "/attribution": self._serve_attribution,
            "/attribution_map": self._serve_attribution_map,
        }

    def is_active(self) -> bool:
        # TensorBoard enables the tab when the log directory holds data of
        # plugin "activations" (see `data_plugin_names`); no extra check here.
        return False

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="Activations")

    # ----------------------------------------------------------------------

    def _json_route(self, request: wrappers.Request, body: Callable[..., Any]) -> wrappers.Response:
        """Runs ``body(ctx, experiment_id, args)`` and maps errors to 4xx answers."""
        try:
            if self._data_provider is None:
                raise plugin_data.UnavailableError("TensorBoard has no data provider yet.")
            ctx = plugin_util.context(request.environ)
            experiment = plugin_util.experiment_id(request.environ)
            result = body(ctx, experiment, request.args)
        except errors.PublicError as err:
            return _error(request, err)
        except Exception as err:
            if not _is_unavailable(err):
                raise
            logger.info("Data provider not ready: %s", err)
            return _error(
                request,
                plugin_data.UnavailableError(
                    f"TensorBoard's data server is not ready yet ({type(err).__name__}); "
                    "try again in a few seconds."
                ),
            )
        headers = None
        if isinstance(result, tuple):  # (image bytes, missing steps) of /channel
            result, missing = result
            headers = [("X-Missing-Steps", ",".join(map(str, missing)))]
        if isinstance(result, bytes):
            # Overlays are JPEG, mosaics PNG: send the type of the stored bytes.
            return http_util.Respond(
                request, result, img_mime_type_detector.from_bytes(result), headers=headers
            )
        return http_util.Respond(request, result, "application/json")

    @wrappers.Request.application
    def _serve_runs(self, request):
        return self._json_route(
            request,
            lambda ctx, exp, args: plugin_data.list_runs(
                self._data_provider, ctx, experiment_id=exp
            ),
        )

    @wrappers.Request.application
    def _serve_layers(self, request):
        return self._json_route(
            request,
            lambda ctx, exp, args: plugin_data.list_layers(
                self._data_provider,
                ctx,
                experiment_id=exp,
                run=plugin_data.require_str(args, "run"),
                cache=self._cache,
            ),
        )

    @wrappers.Request.application
    def _serve_steps(self, request):
        def body(ctx, exp, args):
            run = plugin_data.require_str(args, "run")
            layer = plugin_data.require_str(args, "layer")
            return plugin_data.layer_steps(
                self._data_provider, ctx, experiment_id=exp, run=run, layer=layer, cache=self._cache
            )

        return self._json_route(request, body)

    @wrappers.Request.application
    def _serve_palette(self, request):
        def body(ctx, exp, args):
            run = plugin_data.require_str(args, "run")
            layer = plugin_data.require_str(args, "layer")
            return plugin_data.layer_palette(
                self._data_provider, ctx, experiment_id=exp, run=run, layer=layer, cache=self._cache
            )

        return self._json_route(request, body)

    @wrappers.Request.application
    def _serve_stats(self, request):
        def body(ctx, exp, args):
            run = plugin_data.require_str(args, "run")
            layer = plugin_data.require_str(args, "layer")
            step = plugin_data.require_int(args, "step")
            return plugin_data.layer_stats(
                self._data_provider,
                ctx,
                experiment_id=exp,
                run=run,
                layer=layer,
                step=step,
                cache=self._cache,
            )

        return self._json_route(request, body)

    @wrappers.Request.application
    def _serve_channel(self, request):
        def body(ctx, exp, args):
            run = plugin_data.require_str(args, "run")
            layer = plugin_data.require_str(args, "layer")
            probe = plugin_data.require_int(args, "probe")
            channel = plugin_data.require_int(args, "channel")
            steps = plugin_data.require_steps(args, "steps")
            return plugin_data.channel_history(
                self._data_provider,
                ctx,
                experiment_id=exp,
                run=run,
                layer=layer,
                probe=probe,
                channel=channel,
                steps=steps,
                cache=self._cache,
            )

        return self._json_route(request, body)

    @wrappers.Request.application
    def _serve_image(self, request):
        def body(ctx, exp, args):
            run = plugin_data.require_str(args, "run")
            tag = plugin_data.require_str(args, "tag")
            step = plugin_data.require_int(args, "step")
            index = plugin_data.require_int(args, "index")
            return plugin_data.image_bytes(
                self._data_provider,
                ctx,
                experiment_id=exp,
                run=run,
                tag=tag,
                step=step,
                index=index,
                cache=self._cache,
            )

        return self._json_route(request, body)

    @wrappers.Request.application
    def _serve_scalars(self, request):
        def body(ctx, exp, args):
            run = plugin_data.require_str(args, "run")
            layer = plugin_data.require_str(args, "layer")
            return plugin_data.layer_scalars(
                self._data_provider, ctx, experiment_id=exp, run=run, layer=layer, cache=self._cache
            )

        return self._json_route(request, body)

    @wrappers.Request.application
    def _serve_histogram(self, request):
        def body(ctx, exp, args):
            run = plugin_data.require_str(args, "run")
            layer = plugin_data.require_str(args, "layer")
            step = plugin_data.require_int(args, "step")
            return plugin_data.layer_histogram(
                self._data_provider,
                ctx,
                experiment_id=exp,
                run=run,
                layer=layer,
                step=step,
                nearest=plugin_data.optional_flag(args, "nearest"),
                cache=self._cache,
            )

        return self._json_route(request, body)

    @wrappers.Request.application
    def _serve_predictions(self, request):
        return self._json_route(
            request,
            lambda ctx, exp, args: plugin_data.predictions(
                self._data_provider,
                ctx,
                experiment_id=exp,
                run=plugin_data.require_str(args, "run"),
                cache=self._cache,
            ),
        )

    @wrappers.Request.application
    def _serve_examples(self, request):
        return self._json_route(
            request,
            lambda ctx, exp, args: plugin_data.layer_examples(
                self._data_provider,
                ctx,
                experiment_id=exp,
                run=plugin_data.require_str(args, "run"),
                layer=plugin_data.require_str(args, "layer"),
            ),
        )

    @wrappers.Request.application
    def _serve_attribution(self, request):
        return self._json_route(
            request,
            lambda ctx, exp, args: plugin_data.attribution(
                self._data_provider,
                ctx,
                experiment_id=exp,
                run=plugin_data.require_str(args, "run"),
                cache=self._cache,
            ),
        )

    @wrappers.Request.application
    def _serve_attribution_map(self, request):
        def body(ctx, exp, args):
            return plugin_data.attribution_map(
                self._data_provider,
                ctx,
                experiment_id=exp,
                run=plugin_data.require_str(args, "run"),
                method=plugin_data.require_str(args, "method"),
                probe=plugin_data.require_int(args, "probe"),
                cls=plugin_data.require_str(args, "class"),
                steps=plugin_data.require_steps(args, "steps", limit=64),
                cache=self._cache,
            )

        return self._json_route(request, body)

    @wrappers.Request.application
    def _serve_index_js(self, request):
        return self._static(request, "index.js")

    @wrappers.Request.application
    def _serve_static(self, request):
        _, found, name = request.path.partition(_STATIC_MARKER)
        return self._static(request, name if found else "")

    def _static(self, request: wrappers.Request, name: str) -> wrappers.Response:
        try:
            body, content_type = plugin_data.static_file(name)
        except errors.PublicError as err:
            return _error(request, err)
        return http_util.Respond(request, body, content_type)


def _is_unavailable(err: Exception) -> bool:
    """Whether ``err`` says the data provider cannot answer yet (the Rust data server starting)."""
    grpc = sys.modules.get("grpc")  # imported by TensorBoard's gRPC data provider, if in use
    return grpc is not None and isinstance(err, grpc.RpcError)


def _error(request: wrappers.Request, err: errors.PublicError) -> wrappers.Response:
    code = err.http_code if 400 <= err.http_code < 500 or err.http_code == 503 else 404
    return http_util.Respond(request, str(err), "text/plain", code=code)
