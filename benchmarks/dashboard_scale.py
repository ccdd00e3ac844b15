"""The Activations dashboard at scale: each interaction's route, timed in process.

Usage: ``python benchmarks/dashboard_scale.py [--steps 500 --layers 50 --probes 16]
[--loader python|rust|both]``. Prints a markdown table of milliseconds per route.

Writes a run in the logger's layout (issue 16: 500 steps x 50 layers x 16
probes, small 16-channel maps) directly with :mod:`tb_activations.summary`,
which is quick, then serves it through TensorBoard's own stack:
``EventMultiplexer`` -> ``MultiplexerDataProvider`` (``--load_fast=false``)
or the Rust data server -> ``GrpcDataProvider`` (``--load_fast=true``, the
default), ``TensorBoardWSGI`` and ``werkzeug.test.Client``, and times the
requests each dashboard interaction makes: the first one (cold caches) and
the median of the following ones. The target is 200 ms per route.

The machine is shared and noisy: compare orders of magnitude, not the
last digit.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from urllib.parse import urlencode

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tb_activations import metadata, summary

ROUTE = "/data/plugin/activations"
RUN = metadata.DEFAULT_RUN_NAME
CHANNELS = 16
CELL = 8
TARGET_MS = 200.0


def _png(seed: int, size: int) -> bytes:
    """A smooth palette PNG of levels, as the logger writes mosaics (a few hundred bytes)."""
    from tb_activations.colormaps import palette
    from tb_activations.encode import encode_palette_png

    y, x = np.mgrid[0:size, 0:size]
    levels = ((x * 7 + y * (seed + 1)) % 254).astype(np.uint8)
    return encode_palette_png(levels, palette("magma"))


def write_run(run_dir: str, *, steps: int, layers: int, probes: int) -> float:
    """Writes the run; returns the seconds it took."""
    start = time.perf_counter()
    cols = int(np.ceil(np.sqrt(CHANNELS)))
    grid = {"cols": cols, "rows": cols, "cell_w": CELL, "cell_h": CELL, "sep": 1}
    side = cols * (CELL + 1) - 1
    # A few distinct small PNGs reused: the listing reads no PNG, crops decode them.
    pngs = [_png(i, side) for i in range(probes)]
    names = [f"probe_{i}" for i in range(probes)]
    rng = np.random.default_rng(0)
    base = rng.random((layers, probes, CHANNELS, 4), dtype=np.float32)
    pred_content = metadata.create_predictions_content(
        probes=names, labels=None, class_names=[f"c{i}" for i in range(10)], num_classes=10
    )
    writer = summary.SummaryWriter(run_dir)
    for step in range(steps):
        values = []
        for i in range(layers):
            layer = f"block_{i}/conv"
            content = metadata.create_layer_content(
                layer=layer,
                index=i,
                class_name="Conv2D",
                shape=(CELL, CELL, CHANNELS),
                probes=names,
                labels=None,
                grid=grid,
                top_k=5,
                rank_by="mean",
                colormap="magma",
                normalize="layer",
            )
            for view in metadata.VIEWS:
                values.append(
                    summary.image_value(
                        metadata.view_tag(layer, view), pngs, width=side, height=side
                    )
                )
            values.append(
                summary.float_tensor_value(
                    metadata.stats_tag(layer), base[i] + step * 0.01, content=content
                )
            )
            for name in (*metadata.SCALAR_SUFFIXES, "cka_first", "cka_previous"):
                values.append(summary.scalar_value(metadata.scalar_tag(layer, name), 0.5))
        predictions = np.zeros((probes, 4), np.float32)
        predictions[:, 0] = step % 10
        predictions[:, 1] = 0.5
        predictions[:, 2] = -1
        predictions[:, 3] = np.nan
        values.append(
            summary.float_tensor_value(metadata.PREDICTIONS_TAG, predictions, content=pred_content)
        )
        values.append(summary.scalar_value(metadata.LOG_SECONDS_TAG, 0.1))
        writer.write(step, values)
    writer.close()
    return time.perf_counter() - start


def python_provider(log_dir: str):
    from tensorboard.backend.event_processing import data_provider as tb_data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer

    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        size_guidance={"tensors": 0, "scalars": 0},
        tensor_size_guidance={"images": 0, "scalars": 0, metadata.PLUGIN_NAME: 0},
    )
    multiplexer.AddRunsFromDirectory(log_dir)
    multiplexer.Reload()
    return tb_data_provider.MultiplexerDataProvider(multiplexer, log_dir), None


def rust_provider(log_dir: str):
    from tensorboard.data import server_ingester
    from tensorboard.util import grpc_util

    ingester = server_ingester.SubprocessServerDataIngester(
        server_ingester.get_server_binary(),
        log_dir,
        reload_interval=5,  # TensorBoard's default
        channel_creds_type=grpc_util.ChannelCredsType.LOCAL,
        samples_per_plugin={"images": 100000, metadata.PLUGIN_NAME: 100000, "scalars": 100000},
    )
    ingester.start()
    return ingester.data_provider, ingester


def make_client(provider, log_dir: str):
    from tensorboard.backend import application
    from tensorboard.plugins import base_plugin
    from werkzeug import test as werkzeug_test

    from tb_activations.activations_plugin import ActivationsPlugin

    context = base_plugin.TBContext(data_provider=provider, logdir=log_dir)
    app = application.TensorBoardWSGI([ActivationsPlugin(context)], data_provider=provider)
    return werkzeug_test.Client(app)


def wait_loaded(client, steps: int, layers: int, timeout: float = 600) -> float:
    """Seconds until every layer lists all its steps (the Rust server loads in the background)."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        response = client.get(f"{ROUTE}/layers?{urlencode({'run': RUN})}")
        if response.status_code == 200:
            answer = response.json
            last = answer["layers"][-1]["layer"] if answer["layers"] else None
            if len(answer["layers"]) == layers and len(answer["steps"]) == steps:
                query = urlencode({"run": RUN, "layer": last})
                if len(client.get(f"{ROUTE}/steps?{query}").json["steps"]) == steps:
                    return time.perf_counter() - start
        time.sleep(1)
    raise TimeoutError("the data provider never showed every step")


def interactions(steps: int, layers: int, probes: int) -> list[tuple[str, str, list[dict]]]:
    """(interaction, route, [query, ...]): the requests the dashboard makes, in order."""
    layer = f"block_{layers // 2}/conv"
    mid = steps // 2
    play = list(range(mid, min(steps, mid + 10)))
    image = {"run": RUN, "tag": f"{layer}/mosaic", "index": probes - 1}
    history = {"run": RUN, "layer": layer, "probe": probes - 1, "channel": CHANNELS - 1}
    film = [int(s) for s in np.linspace(0, steps - 1, min(steps, 60)).astype(int)]
    return [
        ("open the tab", "/runs", [{}]),
        ("open the tab / poll every 10 s", "/layers", [{"run": RUN}] * 5),
        ("open the tab / poll", "/predictions", [{"run": RUN}] * 5),
        ("choose a layer / poll", "/steps", [{"run": RUN, "layer": layer}] * 5),
        ("choose a layer", "/scalars", [{"run": RUN, "layer": layer}] * 5),
        ("step change, Play", "/stats", [{"run": RUN, "layer": layer, "step": s} for s in play]),
        ("hover (same step)", "/stats", [{"run": RUN, "layer": layer, "step": mid}] * 5),
        ("step change, Play", "/image", [{**image, "step": s} for s in play]),
        ("choose a layer (colour bar)", "/palette", [{"run": RUN, "layer": layer}] * 3),
        (
            "overview: this probe, every layer",
            "/image",
            [
                {"run": RUN, "tag": f"block_{i}/conv/mosaic", "step": mid, "index": 0}
                for i in range(layers)
            ],
        ),
        (
            "open a channel (history)",
            "/channel",
            [{**history, "steps": ",".join(map(str, film))}] * 3
            + [{**history, "channel": c, "steps": ",".join(map(str, film))} for c in range(3)],
        ),
    ]


def time_routes(client, steps: int, layers: int, probes: int) -> list[dict]:
    rows = []
    for what, route, queries in interactions(steps, layers, probes):
        times = []
        status = set()
        for query in queries:
            start = time.perf_counter()
            response = client.get(f"{ROUTE}{route}" + (f"?{urlencode(query)}" if query else ""))
            response.get_data()
            times.append(1000 * (time.perf_counter() - start))
            status.add(response.status_code)
        rows.append(
            {
                "interaction": what,
                "route": route,
                "first_ms": times[0],
                "median_ms": statistics.median(times[1:]) if len(times) > 1 else times[0],
                "max_ms": max(times),
                "status": sorted(status),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--layers", type=int, default=50)
    parser.add_argument("--probes", type=int, default=16)
    parser.add_argument("--loader", choices=("python", "rust", "both"), default="both")
    args = parser.parse_args(argv)
    worst = 0.0
    with tempfile.TemporaryDirectory() as log_dir:
        seconds = write_run(
            os.path.join(log_dir, RUN), steps=args.steps, layers=args.layers, probes=args.probes
        )
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(log_dir) for f in fs)
        print(
            f"{args.steps} steps x {args.layers} layers x {args.probes} probes, {CHANNELS} channels "
            f"of {CELL}x{CELL}: written in {seconds:.1f} s, {size / 1e6:.1f} MB"
        )
        loaders = ("python", "rust") if args.loader == "both" else (args.loader,)
        for loader in loaders:
            start = time.perf_counter()
            provider, ingester = (python_provider if loader == "python" else rust_provider)(log_dir)
            client = make_client(provider, log_dir)
            loaded = wait_loaded(client, args.steps, args.layers)
            print(
                f"\n{loader} loader: loaded in {time.perf_counter() - start:.1f} s ({loaded:.1f} s polling)\n"
            )
            print("| interaction | route | first (ms) | median (ms) | max (ms) | status |")
            print("|---|---|---:|---:|---:|---|")
            for row in time_routes(client, args.steps, args.layers, args.probes):
                worst = max(worst, row["max_ms"])
                print(
                    f"| {row['interaction']} | `{row['route']}` | {row['first_ms']:.1f} | "
                    f"{row['median_ms']:.1f} | {row['max_ms']:.1f} | {row['status']} |"
                )
            del client, provider
            # Free the Python loader's events now, not in a collection timed under the next loader.
            gc.collect()
            if ingester is not None:
                ingester._server.kill() if hasattr(ingester, "_server") else None
    print(f"\nslowest request: {worst:.0f} ms (target {TARGET_MS:.0f} ms per route)")
    return 0 if worst <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
