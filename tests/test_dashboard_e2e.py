"""End to end: a real ``tensorboard`` process and the dashboard in Chromium.

Starts ``tensorboard --logdir ... --port 0`` under both data loaders, waits
for ``/data/plugins_listing`` to enable the plugin, then drives the page with
Playwright (Debian's ``/usr/bin/chromium``; never ``playwright install``).
The event files are written by the real ActivationLogger
(:func:`tests.test_activations_plugin.write_logdir`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tb_activations import metadata
from tests.test_activations_plugin import (
    DEAD_CHANNEL,
    HOSTILE_PROBE,
    HOSTILE_RUN,
    RUN,
    STEPS,
    write_logdir,
)

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# The README's docs/dashboard.png is made from the demo by docs/make_screenshot.py; the
# screenshot here goes to the test's own directory (a test never rewrites tracked files).
TENSORBOARD = str(Path(sys.executable).with_name("tensorboard"))
X = "\N{MULTIPLICATION SIGN}"
PORT_LINE = re.compile(r"TensorBoard \S+ at http://127\.0\.0\.1:(\d+)/")


class TensorBoard:
    """A ``tensorboard`` subprocess; ``url`` once it listens."""

    def __init__(self, log_dir: str, tmp: Path, *, load_fast: bool, extra: tuple[str, ...] = ()):
        self.err_path = tmp / f"tensorboard_{load_fast}.err"
        self.err = open(self.err_path, "w")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.proc = subprocess.Popen(
            [
                TENSORBOARD,
                "--logdir",
                log_dir,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--reload_interval",
                "1",
                f"--load_fast={'true' if load_fast else 'false'}",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.err,
            env=env,
        )
        self.url = None

    def wait_listening(self, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = PORT_LINE.search(self.err_path.read_text(errors="replace"))
            if match:
                self.url = f"http://127.0.0.1:{match.group(1)}"
                return self.url
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"TensorBoard did not start:\n{self.err_path.read_text()[-3000:]}")

    def get_json(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.load(response)

    def wait_plugin_enabled(self, timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        listing = None
        while time.monotonic() < deadline:
            try:
                listing = self.get_json("/data/plugins_listing")
                if listing.get("activations", {}).get("enabled"):
                    return listing["activations"]
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.5)
        raise AssertionError(f"activations never enabled: {listing}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("e2e_logs"))
    write_logdir(path)
    return path


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_dashboard(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    problems = []
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.on(
        "dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss())
    )
    page.on(
        "response",
        lambda r: (
            r.status >= 400
            and "/data/plugin/activations/" in r.url
            and problems.append(f"{r.status} {r.url}")
        ),
    )
    page.goto(url + "/data/plugin_entry.html?name=activations")
    return page, problems


def wait_text(page, selector, text, timeout=20_000):
    page.wait_for_function(
        "([sel, text]) => (document.querySelector(sel)?.textContent || '').includes(text)",
        arg=[selector, text],
        timeout=timeout,
    )


def cell_center(page, grid, channel):
    """Page coordinates of the middle of ``channel``'s cell in the displayed mosaic."""
    box = page.locator(".tba-mosaic-img").first.bounding_box()
    natural = page.eval_on_selector(".tba-mosaic-img", "i => [i.naturalWidth, i.naturalHeight]")
    col, row = channel % grid["cols"], channel // grid["cols"]
    x = (col * (grid["cell_w"] + grid["sep"]) + grid["cell_w"] / 2) * box["width"] / natural[0]
    y = (row * (grid["cell_h"] + grid["sep"]) + grid["cell_h"] / 2) * box["height"] / natural[1]
    return box["x"] + x, box["y"] + y


@pytest.mark.parametrize("load_fast", [True, False], ids=["rust_loader", "python_loader"])
def test_dashboard_in_chromium(browser, log_dir, tmp_path, load_fast):
    server = TensorBoard(log_dir, tmp_path, load_fast=load_fast)
    try:
        url = server.wait_listening()
        entry = server.wait_plugin_enabled()
        assert entry["loading_mechanism"]["module_path"] == "/data/plugin/activations/index.js"
        layers = {
            lay["layer"]: lay
            for lay in server.get_json(f"/data/plugin/activations/layers?run={RUN}")["layers"]
        }
        conv_b = layers["conv_b"]
        grid = conv_b["grid"]

        page, problems = open_dashboard(browser, url)
        page.wait_for_selector("#tba-layer option", state="attached", timeout=30_000)
        assert page.locator("#tba-run").input_value() == RUN  # the logger's default run first
        assert page.eval_on_selector(
            "#tba-layer", "s => [...s.options].map(o => o.textContent)"
        ) == [
            f"0. conv_a — Conv2D 16{X}16{X}4",
            f"1. pool_a — MaxPooling2D 8{X}8{X}4",
            f"2. conv_b — Conv2D 8{X}8{X}6",
        ]

        # Choose a layer; its mosaic is the stored PNG at its natural size.
        page.select_option("#tba-layer", "conv_b")
        page.wait_for_selector(".tba-mosaic-img[data-layer='conv_b']")
        natural = page.eval_on_selector(".tba-mosaic-img", "i => [i.naturalWidth, i.naturalHeight]")
        assert natural == [
            grid["cols"] * (grid["cell_w"] + grid["sep"]) - grid["sep"],
            grid["rows"] * (grid["cell_h"] + grid["sep"]) - grid["sep"],
        ]

        # Move the slider to the third logged step.
        page.locator("#tba-step").fill("2")
        wait_text(page, "#tba-step-label", f"step {STEPS[2]} (3 of {len(STEPS)})")
        page.wait_for_selector(f".tba-mosaic-img[data-layer='conv_b'][data-step='{STEPS[2]}']")

        # Hover: channel index and its statistics; the dead channel says so.
        page.mouse.move(*cell_center(page, grid, 1))
        wait_text(page, "#tba-hover", "channel 1 · mean ")
        assert "alive" in page.locator("#tba-hover").text_content()
        page.mouse.move(*cell_center(page, grid, DEAD_CHANNEL))
        wait_text(page, "#tba-hover", f"channel {DEAD_CHANNEL} · mean 0 · max 0")
        assert "dead (0 on every probe)" in page.locator("#tba-hover").text_content()

        # Click: the channel opens, enlarged, over the probe, with its history.
        page.mouse.click(*cell_center(page, grid, 1))
        page.wait_for_selector("#tba-channel:not([hidden])")
        wait_text(page, "#tba-channel-title", f"Channel 1 of conv_b · cat · step {STEPS[2]}")
        assert "alive" in page.locator("#tba-channel-stats").text_content()
        cell = page.eval_on_selector("#tba-channel-cell", "c => [c.width, c.height]")
        assert cell == [grid["cell_w"], grid["cell_h"]]
        page.wait_for_function(
            f"document.querySelectorAll('#tba-filmstrip .tba-frame.tba-loaded').length === {len(STEPS)}"
        )
        frames = page.eval_on_selector_all(
            "#tba-filmstrip .tba-frame", "fs => fs.map(f => f.dataset.step)"
        )
        assert frames == [str(s) for s in STEPS]
        assert page.locator("#tba-filmstrip .tba-current").get_attribute("data-step") == str(
            STEPS[2]
        )
        over = page.eval_on_selector("#tba-channel-overlay", "c => [c.width, c.height]")
        assert over == [16, 16]  # the probe's size

        # Top-k strip and overlay of the current step.
        page.wait_for_function("document.querySelector('#tba-overlay').naturalWidth > 0")
        assert page.eval_on_selector("#tba-overlay", "i => [i.naturalWidth, i.naturalHeight]") == [
            33,
            16,
        ]
        wait_text(page, "#tba-topk-caption", "Top 3 channels by mean: ")
        assert page.eval_on_selector("#tba-topk", "i => i.naturalWidth") > 0

        # Drift and dead-fraction charts from the scalars that exist.
        page.wait_for_selector(
            "#tba-drift [data-series='dead_fraction'] svg polyline", state="attached"
        )
        series = page.eval_on_selector_all(
            "#tba-drift [data-series]", "cs => cs.map(c => c.dataset.series)"
        )
        assert series[:3] == ["cka_first", "cka_previous", "dead_fraction"]
        assert {"newly_dead_fraction", "mean_activation", "nonfinite_count"} <= set(series)
        # The logger's own timings, per step, after the layer's series.
        page.wait_for_selector(
            "#tba-drift [data-timing='worker_seconds'] svg polyline", state="attached"
        )
        timings = page.eval_on_selector_all(
            "#tba-drift [data-timing]", "cs => cs.map(c => c.dataset.timing)"
        )
        assert timings[:2] == ["stall_seconds", "worker_seconds"]

        # The probe's predicted class at this step.
        wait_text(page, "#tba-prediction-now", f"cat at step {STEPS[2]}: class ")

        # Compare with the first step, side by side.
        page.select_option("#tba-compare-mode", "step")
        page.select_option("#tba-compare-step", str(STEPS[0]))
        wait_text(page, ".tba-pair .tba-figure:nth-child(2) .tba-caption", f"step {STEPS[0]}")
        page.wait_for_function("document.querySelectorAll('.tba-mosaic-img')[1].naturalWidth > 0")

        # Grid geometry of the page's own module: separators map to no channel.
        geometry = page.evaluate(
            """async () => {
              const m = await import('./index.js');
              const g = {cols: 3, rows: 2, cell_w: 8, cell_h: 8, sep: 1};
              return [m.channelAt(g, 6, 9.5, 0.5, 26, 17), m.channelAt(g, 6, 8.5, 0.5, 26, 17),
                      m.channelAt(g, 5, 20, 12, 26, 17), m.channelAt(g, 6, 20, 12, 26, 17)];
            }"""
        )
        assert geometry == [1, None, None, 5]

        if load_fast:  # kept with the test's files, to look at when it fails later on
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

        # Play runs to the last step and stops there.
        page.locator("#tba-play").click()
        wait_text(page, "#tba-step-label", f"step {STEPS[-1]} ({len(STEPS)} of {len(STEPS)})")
        wait_text(page, "#tba-play", "Play")

        # Names from the log directory are shown as text, never run as HTML.
        page.select_option("#tba-run", HOSTILE_RUN)
        wait_text(page, "#tba-probe", HOSTILE_PROBE)
        assert page.locator("#tba-run option:checked").text_content() == HOSTILE_RUN
        assert page.locator("img[src='y'], img[src='x'], script:not([type])").count() == 0
        assert problems == []
        page.close()
    finally:
        server.stop()


def test_empty_state_then_data_and_sampling_notice(browser, tmp_path):
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    # Keep 2 of the 4 logged steps' images: the dashboard must say so.
    server = TensorBoard(
        str(log_dir), tmp_path, load_fast=True, extra=("--samples_per_plugin=images=2",)
    )
    try:
        url = server.wait_listening()
        page, problems = open_dashboard(browser, url)
        page.wait_for_selector("#tba-empty:not([hidden])", timeout=30_000)
        assert "ActivationLogger" in page.locator("#tba-empty pre").text_content()

        write_logdir(str(log_dir))
        server.wait_plugin_enabled()
        page.wait_for_selector("#tba-layer option", state="attached", timeout=30_000)
        page.wait_for_selector("#tba-notice:not([hidden])")
        notice = page.locator("#tba-notice").text_content()
        assert metadata.SAMPLING_FLAG in notice
        assert f"of the {len(STEPS)} logged steps" in notice
        assert problems == []
        page.close()
    finally:
        server.stop()


def test_channel_examples_in_chromium(browser, tmp_path):
    """The opened channel's top examples, what is new, its optimised image; the Channels view."""
    from tests.test_examples_log import _logger, _pool

    log_dir = tmp_path / "logs"
    pool = _pool()
    logger = _logger(log_dir, pool)
    logger.log(0)
    logger.log_examples(0)
    logger.log(1)
    shuffled = pool.copy()
    shuffled[2] = 0  # the brightest red square leaves: one new winner for channel 0
    logger.log_examples(1, pool=shuffled)
    logger.log_feature_vis(1, channels=2, steps=2)
    logger.close()
    server = TensorBoard(str(log_dir), tmp_path, load_fast=True)
    try:
        url = server.wait_listening()
        server.wait_plugin_enabled()
        page, problems = open_dashboard(browser, url)
        page.wait_for_selector(".tba-mosaic-img[data-layer='det']", timeout=30_000)
        page.wait_for_selector("#tba-channels:not([hidden])")
        wait_text(page, "#tba-channels-caption", "example-step 1: channels 0-1 of 2")
        # The Channels view: a click on the second row opens channel 1.
        box = page.locator("#tba-channels-page").bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.75)
        wait_text(page, "#tba-examples-title", "Top 4 examples of channel 1 · example-step 1")
        # Channel 0 at step 1: the three red squares still there, the dim corner one new.
        page.evaluate("window.__tbActivations.pickChannel(0)")
        wait_text(page, "#tba-examples-title", "Top 4 examples of channel 0 · example-step 1")
        wait_text(page, "#tba-examples-summary", "1 of 4 new since example-step 0")
        ranks = page.eval_on_selector_all(
            "#tba-examples .tba-example", "fs => fs.map(f => f.dataset.image)"
        )
        assert ranks == ["5", "11", "17", "20"]
        assert page.locator("#tba-examples .tba-new").count() == 1
        wait_text(page, "#tba-examples", "image_5")
        page.wait_for_function(
            "() => document.querySelector('#tba-examples canvas').width > 1", timeout=20_000
        )
        centre = page.evaluate(
            "() => { const c = document.querySelector('#tba-examples canvas');"
            " return [...c.getContext('2d').getImageData(c.width / 2, c.height / 2, 1, 1).data]; }"
        )
        assert centre[0] > 150 and centre[1] < 60 and centre[2] < 60, centre  # a red crop
        page.wait_for_selector(".tba-feature-vis", state="visible")
        # Back at step 0: the first example-step, nothing to compare with.
        page.evaluate("window.__tbActivations.setStepIndex(0)")
        wait_text(page, "#tba-examples-summary", "first example-step")
        assert not problems, problems
        page.close()
    finally:
        server.stop()
