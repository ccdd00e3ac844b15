"""The Activations plugin under hostile requests (issue 7, item 5).

Every route is called with missing, wrong-typed, huge and malicious
parameters (path traversal, HTML/script, NUL bytes, unknown runs) through
TensorBoard's own WSGI stack and ``werkzeug.test.Client``, over a real data
provider reading event files written by the real ``ActivationLogger`` (the
fixtures of ``test_activations_plugin``). No answer may be a 5xx; every 4xx
carries a plain-text message. ``REQUESTS`` counts the requests tried (figure in docs/guide/reliability.md).
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_activations_plugin import (
    HOSTILE_LAYER,
    HOSTILE_RUN,
    ROUTE,
    RUN,
    SYNTHETIC_RUN,
    make_client,
    make_provider,
    write_logdir,
)

REQUESTS = {"table": 0, "fuzz": 0}
#: A run with attribution (and `attribution_classes`, `attribution_top_k`): /attribution_map's.
ATTR_RUN = "explained"

#: route -> its parameters and their kind ("str" or "int").
ROUTES = {
    "/runs": {},
    "/layers": {"run": "str"},
    "/steps": {"run": "str", "layer": "str"},
    "/stats": {"run": "str", "layer": "str", "step": "int"},
    "/channel": {"run": "str", "layer": "str", "probe": "int", "channel": "int", "steps": "steps"},
    "/palette": {"run": "str", "layer": "str"},
    "/image": {"run": "str", "tag": "str", "step": "int", "index": "int"},
    "/scalars": {"run": "str", "layer": "str"},
    "/histogram": {"run": "str", "layer": "str", "step": "int"},
    "/predictions": {"run": "str"},
    "/attribution": {"run": "str"},
    "/attribution_map": {
        "run": "str",
        "method": "method",
        "probe": "int",
        "class": "class",
        "steps": "steps",
    },
}
VALID = {
    "run": RUN,
    "layer": "conv_b",
    "tag": "conv_b/mosaic",
    "step": "10",
    "index": "0",
    "probe": "1",
    "channel": "2",
    "steps": "0,10,20",
    "method": "gradcam",
    "class": "predicted",
}

HOSTILE_STRINGS = [
    "",
    " ",
    "nope",
    "../../../../etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "/etc/passwd",
    "..\\..\\windows\\win.ini",
    "activations/../activations",
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    HOSTILE_RUN,
    HOSTILE_LAYER + "0",
    "conv_b\x00.png",
    "\x00",
    "\r\nSet-Cookie: x=1",
    "%00",
    "%ZZ",
    "日本語",
    "\ud7ff\ue000",
    "a" * 4097,
    "a" * 100_000,
    "${jndi:ldap://x}",
    "' OR 1=1 --",
    "{{7*7}}",
    "NaN",
    "Infinity",
    "-0",
    "1e400",
    "0x10",
    "1.5",
    "-1",
    "9" * 19,
    "99999999999999999999999999999",
    "+1",
    " 1",
    "١٢",  # Arabic-Indic digits: str.isdigit() but not [0-9]
]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    log_dir = str(tmp_path_factory.mktemp("fuzz_logs"))
    write_logdir(log_dir)
    from tb_activations import ActivationLogger
    from tests.test_attribution import quadrant_model
    from tests.test_attribution_step import quadrant_probes

    with ActivationLogger(
        quadrant_model(),
        quadrant_probes(),
        log_dir,
        run_name=ATTR_RUN,
        layers=["conv"],
        attribution_classes=[1],
        attribution_top_k=2,
        class_names=["nw", "ne", "sw", "se"],
    ) as logger:
        for step in (0, 10):
            logger.log(step)
    provider, _ = make_provider(log_dir)
    return make_client(provider, log_dir)


def request(client, route: str, params: dict | list, counter: str):
    REQUESTS[counter] += 1
    query = urlencode(params, doseq=True)
    return client.get(f"{ROUTE}{route}" + (f"?{query}" if query else ""))


def assert_handled(response, what):
    assert response.status_code < 500, (what, response.status_code, response.data[:300])
    if response.status_code >= 400:
        assert 400 <= response.status_code < 500
        assert response.mimetype == "text/plain", what
        assert response.data.strip(), what  # a message, never an empty 4xx
        # Hostile text travels back only as text/plain, never as HTML.
        assert b"<html" not in response.data.lower()


def valid(route: str, name: str) -> str:
    return ATTR_RUN if name == "run" and route.startswith("/attribution") else VALID[name]


def test_valid_requests_answer_200(client):
    for route, params in ROUTES.items():
        response = request(client, route, {k: valid(route, k) for k in params}, "table")
        assert response.status_code == 200, (route, response.data[:300])


@pytest.mark.parametrize("route", [r for r, p in ROUTES.items() if p])
def test_each_missing_parameter_is_400_naming_it(client, route):
    names = list(ROUTES[route])
    for missing in names:
        params = {k: valid(route, k) for k in names if k != missing}
        response = request(client, route, params, "table")
        assert response.status_code == 400, (route, missing)
        assert f"`{missing}`".encode() in response.data
        assert_handled(response, (route, missing))


@pytest.mark.parametrize("route", [r for r, p in ROUTES.items() if p])
def test_every_hostile_value_in_every_parameter_is_4xx_or_data(client, route):
    names = list(ROUTES[route])
    for name in names:
        for value in HOSTILE_STRINGS:
            params = {k: valid(route, k) for k in names}
            params[name] = value
            response = request(client, route, params, "table")
            assert_handled(response, (route, name, value[:40]))
            if ROUTES[route][name] in ("int", "steps") and response.status_code == 400:
                assert f"`{name}`".encode() in response.data
            if value in ("../../../../etc/passwd", "/etc/passwd"):
                assert b"root:" not in response.data


def test_repeated_and_unknown_parameters_are_harmless(client):
    for route, params in ROUTES.items():
        pairs = [(k, valid(route, k)) for k in params] + [(k, "other") for k in params]
        pairs += [("unknown", "<b>x</b>"), ("__proto__", "1"), ("run[]", "x")]
        assert_handled(request(client, route, pairs, "table"), route)


def test_unknown_runs_layers_tags_and_steps_are_404_with_a_message(client):
    cases = [
        ("/layers", {"run": "no_such_run"}),
        ("/stats", {"run": "no_such_run", "layer": "conv_b", "step": "0"}),
        ("/stats", {"run": RUN, "layer": "no_such_layer", "step": "0"}),
        ("/stats", {"run": RUN, "layer": "conv_b", "step": "999999999999999999"}),
        ("/image", {"run": RUN, "tag": "conv_b/mosaic", "step": "0", "index": "999999999999"}),
        ("/image", {"run": RUN, "tag": "../conv_b/mosaic", "step": "0", "index": "0"}),
        ("/image", {"run": "../" + RUN, "tag": "conv_b/mosaic", "step": "0", "index": "0"}),
        ("/scalars", {"run": "no_such_run", "layer": "conv_b"}),
        ("/predictions", {"run": SYNTHETIC_RUN + "/.."}),
    ]
    for route, params in cases:
        response = request(client, route, params, "table")
        assert response.status_code == 404, (route, params, response.data[:200])
        assert_handled(response, (route, params))


def test_static_routes_never_leave_the_folder(client):
    for name in [
        "../plugin_data.py",
        "..%2fplugin_data.py",
        "%2e%2e%2fplugin_data.py",
        "....//plugin_data.py",
        "static/../../setup.cfg",
        "index.js%00.png",
        "index.js/",
        "<script>.js",
        "a" * 5000 + ".js",
    ]:
        REQUESTS["table"] += 1
        response = client.get(f"{ROUTE}/static/{name}")
        assert response.status_code == 404, name
        assert_handled(response, name)
        assert b"import" not in response.data  # no Python source


def test_huge_query_strings_are_refused_or_answered(client):
    huge = {"run": "r" * 1_000_000, "layer": "conv_b", "step": "1" * 100_000}
    for route in ROUTES:
        assert_handled(request(client, route, huge, "table"), route)


# ---------------------------------------------------------------------------
# Fuzz: generated routes and parameters


def _value(kind: str):
    hostile = st.sampled_from(HOSTILE_STRINGS)
    anything = st.text(max_size=60)
    if kind == "steps":
        return st.one_of(
            st.lists(st.integers(-5, 10**19), max_size=250).map(lambda v: ",".join(map(str, v))),
            hostile,
            anything,
        )
    if kind == "method":
        return st.one_of(st.sampled_from(["gradcam", "saliency", "nope"]), hostile, anything)
    if kind == "class":
        choices = ["predicted", "label", "rank2", "rank0", "0", "1", "99", "cat", "1e3", "-1"]
        return st.one_of(st.sampled_from(choices), hostile, anything)
    if kind == "int":
        return st.one_of(
            st.integers(-(10**20), 10**20).map(str),
            st.sampled_from(["0", "1", "10", "20", "30"]),
            hostile,
            anything,
        )
    names = st.sampled_from(
        [RUN, HOSTILE_RUN, SYNTHETIC_RUN, ATTR_RUN, "conv_a", "conv_b", "pool_a", "conv_b/mosaic",
         "conv_a/topk", "conv_a/overlay", "_tb_activations/probes", HOSTILE_LAYER + "0"]
    )  # fmt: skip
    return st.one_of(names, hostile, anything)


@st.composite
def requests_(draw):
    route = draw(st.sampled_from([*ROUTES, "/static/x", "/index.js", "/nope"]))
    params = {}
    for name, kind in ROUTES.get(route, {}).items():
        if draw(st.integers(0, 9)) > 0:  # sometimes missing
            params[name] = draw(_value(kind))
    extra = draw(st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=2))
    return route, {**extra, **params}


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(requests_())
def test_fuzzed_requests_never_answer_5xx(client, generated):
    route, params = generated
    response = request(client, route, params, "fuzz")
    assert_handled(response, (route, {k: str(v)[:40] for k, v in params.items()}))


def test_requests_tried():
    # Runs last in this module (file order): the figure in docs/guide/reliability.md.
    print(f"plugin requests tried: {REQUESTS}, total {sum(REQUESTS.values())}")
    assert REQUESTS["fuzz"] >= 1000 and REQUESTS["table"] > 400


# ---------------------------------------------------------------------------
# Foreign or broken data under the plugin's name, and a data provider not ready


@pytest.fixture(scope="module")
def broken_client(tmp_path_factory):
    """A run whose data under the plugin's name is broken in the ways foreign writers break it."""
    import numpy as np
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.histogram import metadata as histogram_metadata
    from tensorboard.util import tensor_util

    from tb_activations import metadata, summary

    log_dir = tmp_path_factory.mktemp("broken_logs")
    writer = summary.SummaryWriter(str(log_dir / "broken"))
    good = metadata.create_layer_content(
        layer="s", index=0, class_name="Conv2D", shape=(2, 2, 2), probes=["p"], labels=None,
        grid={"cols": 2, "rows": 1, "cell_w": 2, "cell_h": 2, "sep": 1}, top_k=1,
        rank_by="mean", colormap="magma", normalize="layer",
    )  # fmt: skip

    def raw(tag, array, content):
        md = metadata.create_summary_metadata(display_name=tag, description="", content=content)
        return summary_pb2.Summary.Value(
            tag=tag, metadata=md, tensor=tensor_util.make_tensor_proto(array)
        )

    def histogram(tag, array):
        md = histogram_metadata.create_summary_metadata(display_name=tag, description="")
        md.data_class = summary_pb2.DATA_CLASS_TENSOR
        return summary_pb2.Summary.Value(
            tag=tag, metadata=md, tensor=tensor_util.make_tensor_proto(array)
        )

    writer.write(
        0,
        [
            # Histograms (stock plugin "histograms") a foreign writer got wrong:
            # strings, two columns, too many buckets; and one with NaN edges.
            histogram("s/histogram", np.array([[b"a", b"b", b"c"]])),
            histogram("g/histogram", np.ones((4, 2), np.float64)),
            histogram("h/histogram", np.ones((10_001, 3), np.float32)),
            histogram("n/histogram", np.array([[np.nan, 1.0, 2.0], [1.0, np.inf, np.nan]])),
            # A string tensor where float channel statistics belong.
            raw("s/channel_stats", np.array([b"x", b"y"]), good),
            # Layer content a foreign writer got wrong.
            raw("g/channel_stats", np.ones((1, 2, 4), np.float32), {**good, "grid": "3x3"}),
            raw("h/channel_stats", np.ones((1, 2, 4), np.float32), {**good, "shape": [2, "2", 2]}),
            # Predictions with a non-integer class count and a string tensor.
            raw(
                metadata.PREDICTIONS_TAG,
                np.array([[b"a", b"b", b"c", b"d"]]),
                {"version": 1, "num_classes": "ten", "probes": "p", "class_names": 3},
            ),
        ],
    )
    writer.close()
    provider, _ = make_provider(str(log_dir))
    return make_client(provider, str(log_dir))


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/runs", 200),
        ("/layers?run=broken", 200),
        ("/stats?run=broken&layer=s&step=0", 404),
        ("/steps?run=broken&layer=g", 404),
        ("/channel?run=broken&layer=h&probe=0&channel=0&steps=0", 404),
        ("/predictions?run=broken", 200),
        ("/histogram?run=broken&layer=s&step=0", 404),
        ("/histogram?run=broken&layer=g&step=0", 404),
        ("/histogram?run=broken&layer=h&step=0", 404),
        ("/histogram?run=broken&layer=n&step=0", 200),
    ],
)
def test_broken_data_under_the_plugin_name_is_4xx_or_data(broken_client, path, status):
    response = broken_client.get(ROUTE + path)
    assert_handled(response, path)
    assert response.status_code == status, (path, response.data[:300])


def test_broken_data_is_reported_not_shown(broken_client):
    layers = broken_client.get(f"{ROUTE}/layers?run=broken").json
    assert [lay["layer"] for lay in layers["layers"]] == ["s"]
    reasons = {s["tag"]: s["reason"] for s in layers["skipped"]}
    assert "grid" in reasons["g/channel_stats"] and "shape" in reasons["h/channel_stats"]
    stats = broken_client.get(f"{ROUTE}/stats?run=broken&layer=s&step=0")
    assert b"expected float" in stats.data
    predictions = broken_client.get(f"{ROUTE}/predictions?run=broken").json
    assert predictions["num_classes"] == 0 and predictions["steps"] == []
    assert predictions["class_names"] is None
    histogram = broken_client.get(f"{ROUTE}/histogram?run=broken&layer=g&step=0")
    assert b"expected numeric (k, 3)" in histogram.data
    nan_edges = broken_client.get(f"{ROUTE}/histogram?run=broken&layer=n&step=0").json
    assert nan_edges["buckets"] == [[None, 1.0, 2], [1.0, None, None]]
    assert nan_edges["count"] == 2


def test_a_data_server_not_ready_is_503_with_a_message():
    """TensorBoard's gRPC data provider with no data server behind it (it is still starting)."""
    import socket

    import grpc
    from tensorboard.backend import application
    from tensorboard.data import grpc_provider
    from tensorboard.data.proto import data_provider_pb2_grpc
    from tensorboard.plugins import base_plugin
    from werkzeug import test as werkzeug_test

    from tb_activations.activations_plugin import ActivationsPlugin

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    channel = grpc.insecure_channel(address)
    stub = data_provider_pb2_grpc.TensorBoardDataProviderStub(channel)
    provider = grpc_provider.GrpcDataProvider(address, stub)
    plugin = ActivationsPlugin(base_plugin.TBContext(data_provider=provider, logdir=""))
    client = werkzeug_test.Client(application.TensorBoardWSGI([plugin], data_provider=provider))
    for route, params in ROUTES.items():
        response = request(client, route, {k: VALID[k] for k in params}, "table")
        assert response.status_code == 503, (route, response.data[:200])
        assert response.mimetype == "text/plain" and b"not ready" in response.data
    channel.close()

    no_provider = ActivationsPlugin(base_plugin.TBContext(data_provider=None, logdir=""))
    app = no_provider.get_plugin_apps()["/runs"]
    answer = werkzeug_test.Client(app).get("/runs")
    assert answer.status_code == 503 and b"no data provider" in answer.data
