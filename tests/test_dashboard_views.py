"""The dashboard in TensorBoard's own page: theme, shared URL, keyboard, zoom, charts.

One real ``tensorboard`` (Rust loader) and one Chromium for the whole module
(see :mod:`tests.test_dashboard_e2e` for the helpers and the data). The page
under test is TensorBoard's own (``/#activations``), with the dashboard in
its plugin frame, as a user meets it.
"""

from __future__ import annotations

import pytest

from tests.test_activations_plugin import RUN, STEPS
from tests.test_dashboard_e2e import TensorBoard, browser, log_dir  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(log_dir, tmp_path_factory):  # noqa: F811 - the fixture above
    board = TensorBoard(log_dir, tmp_path_factory.mktemp("tb_views"), load_fast=True)
    try:
        board.wait_listening()
        board.wait_plugin_enabled()
        yield board
    finally:
        board.stop()


def open_tensorboard(browser, server, hash_=""):  # noqa: F811
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems = []
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.goto(f"{server.url}/#activations{hash_}")
    frame = page.wait_for_selector("iframe", state="attached", timeout=60_000).content_frame()
    frame.wait_for_selector(".tba-mosaic-img[data-step]", timeout=30_000)
    return page, frame, problems


def test_shared_url_keyboard_zoom_theme_and_charts(browser, server, log_dir):  # noqa: F811
    # A view shared by URL opens as it was: layer, step and opened channel.
    page, frame, problems = open_tensorboard(
        browser,
        server,
        f"&p.activations.layer=conv_b&p.activations.step={STEPS[2]}&p.activations.channel=2",
    )
    frame.wait_for_selector(f".tba-mosaic-img[data-layer='conv_b'][data-step='{STEPS[2]}']")
    frame.wait_for_function(
        "document.querySelector('#tba-channel-title').textContent.startsWith('Channel 2 of conv_b')"
    )

    # Mosaic cells by keyboard: arrows move the cursor, Enter opens the channel;
    # the state goes into TensorBoard's URL, where a shared link carries it.
    frame.focus(".tba-mosaic-wrap")
    for key in ("ArrowRight", "ArrowRight", "ArrowDown", "Enter"):
        page.keyboard.press(key)
    frame.wait_for_function(
        "document.querySelector('#tba-channel-title').textContent.startsWith('Channel 4 of conv_b')"
    )
    page.wait_for_function("location.hash.includes('p.activations.channel=4')")
    hash_ = page.evaluate("location.hash")
    assert hash_.startswith("#activations&") and f"p.activations.run={RUN}" in hash_
    assert f"p.activations.step={STEPS[2]}" in hash_

    # Previous / next layer by keyboard, and the layer search.
    frame.evaluate("document.activeElement.blur()")
    page.keyboard.press("k")
    frame.wait_for_selector(".tba-mosaic-img[data-layer='pool_a']")
    page.keyboard.press("j")
    frame.wait_for_selector(".tba-mosaic-img[data-layer='conv_b']")
    frame.fill("#tba-layer-search", "pool")
    options = frame.eval_on_selector_all("#tba-layer option", "os => os.map(o => o.value)")
    assert options == ["pool_a", "conv_b"]  # the match, and the chosen layer kept listed
    frame.press("#tba-layer-search", "Enter")
    frame.wait_for_selector(".tba-mosaic-img[data-layer='pool_a']")
    frame.fill("#tba-layer-search", "")

    # Zoom: twice the fitted width, panned inside a bounded box.
    width = frame.eval_on_selector(".tba-mosaic-img", "i => i.getBoundingClientRect().width")
    frame.click("#tba-zoom-in")
    zoomed = frame.eval_on_selector(".tba-mosaic-img", "i => i.getBoundingClientRect().width")
    assert zoomed == pytest.approx(2 * width, abs=2)
    box = frame.eval_on_selector(".tba-mosaic-scroll", "s => [s.clientWidth, s.scrollWidth]")
    assert box[0] <= 540 and box[1] >= zoomed - 1
    frame.click("#tba-zoom-fit")

    # Drift charts: the axis fits the data; hovering shows the value; labelled.
    chart = frame.wait_for_selector("#tba-drift [data-series='dead_fraction'] svg")
    assert chart.get_attribute("aria-label").startswith("dead_fraction")
    chart.hover()
    frame.wait_for_function(
        "document.querySelector(\"#tba-drift [data-series='dead_fraction'] .tba-chart-readout\")"
        ".textContent.startsWith('step ')"
    )

    # The activation histogram beside them: the shown step's bars, the bucket on hover.
    hist = frame.wait_for_selector(f"#tba-histogram[data-step='{STEPS[2]}'] svg .tba-hist-bar")
    assert frame.eval_on_selector("#tba-histogram svg", "s => s.getAttribute('aria-label')")
    assert frame.eval_on_selector_all("#tba-histogram .tba-hist-bar", "bs => bs.length") == 30
    hist.hover()
    frame.wait_for_function(
        "document.querySelector('#tba-histogram .tba-chart-readout').textContent.startsWith('[')"
    )

    # The colour bar: the step's scale the logger wrote, then stretched to the probe.
    frame.wait_for_selector("#tba-colorbar:not([hidden])")
    label = frame.eval_on_selector("#tba-colorbar", "e => e.getAttribute('aria-label')")
    assert label.startswith("colour scale from 0 to ")
    frame.check("#tba-stretch")
    frame.wait_for_function(
        "document.querySelector('#tba-colorbar').getAttribute('aria-label').includes('stretched')"
    )
    assert frame.eval_on_selector(".tba-mosaic-img", "i => i.src.startsWith('blob:')")
    frame.uncheck("#tba-stretch")

    # Overviews: this probe in every layer (click one to go there), every probe of a layer.
    frame.select_option("#tba-overview-mode", "layers")
    frame.wait_for_function(
        "document.querySelectorAll('.tba-overview-item.tba-loaded').length === 3"
    )
    frame.click(".tba-overview-item[data-layer='conv_a'] button")
    frame.wait_for_selector(".tba-mosaic-img[data-layer='conv_a']")
    frame.select_option("#tba-overview-mode", "probes")
    frame.wait_for_function(
        "document.querySelectorAll('.tba-overview-item.tba-loaded').length === 3"
    )
    frame.click(".tba-overview-item[data-probe='2'] button")
    frame.wait_for_function("document.querySelector('#tba-probe').value === '2'")
    page.wait_for_function("location.hash.includes('p.activations.overview=probes')")

    # TensorBoard's dark mode (its toggle sets body.dark-mode): the dashboard follows.
    assert not frame.evaluate("document.documentElement.classList.contains('tba-dark')")
    light = frame.evaluate("getComputedStyle(document.body).backgroundColor")
    page.evaluate("document.body.classList.add('dark-mode')")
    frame.wait_for_function("document.documentElement.classList.contains('tba-dark')")
    dark = frame.evaluate("getComputedStyle(document.body).backgroundColor")
    assert light == "rgb(255, 255, 255)" and dark == "rgb(48, 48, 48)"
    page.evaluate("document.body.classList.remove('dark-mode')")
    frame.wait_for_function("!document.documentElement.classList.contains('tba-dark')")
    # Training goes on: new predictions show at the next poll (called here rather
    # than waited for); a hidden Activations tab does not poll.
    write_predictions(log_dir, step=STEPS[-1] + 10)
    app = "window.__tbActivations"
    count = f"{app}.panels.find((p) => p.constructor.name === 'PredictionsPanel').predictions.steps.length"
    assert frame.evaluate(count) == len(STEPS)
    page.eval_on_selector("iframe", "f => { f.style.display = 'none'; }")
    assert frame.evaluate(f"{app}.shown()") is False
    page.eval_on_selector("iframe", "f => { f.style.display = ''; }")
    assert frame.evaluate(f"{app}.shown()") is True
    for _ in range(30):  # TensorBoard reloads the log directory every second
        frame.evaluate(f"{app}.refresh()")
        if frame.evaluate(count) == len(STEPS) + 1:
            break
        page.wait_for_timeout(1000)
    assert frame.evaluate(count) == len(STEPS) + 1
    assert problems == []
    page.close()


def write_predictions(log_dir, step):  # noqa: F811
    """One more step of the logger's predictions tensor in run RUN (a second event file)."""
    import numpy as np

    from tb_activations import metadata, summary

    content = metadata.create_predictions_content(
        probes=["cat", "<b>dog</b>", "car"], labels=None, class_names=None, num_classes=3
    )
    rows = np.array([[0, 0.9, -1, np.nan]] * 3, np.float32)
    writer = summary.SummaryWriter(f"{log_dir}/{RUN}")
    writer.write(
        step, [summary.float_tensor_value(metadata.PREDICTIONS_TAG, rows, content=content)]
    )
    writer.close()
