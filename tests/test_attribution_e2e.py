"""The Explain panel in Chromium, over a real ``tensorboard`` process (Python loader)."""

from __future__ import annotations

import pytest

from tests.test_dashboard_e2e import TensorBoard, browser, open_dashboard, wait_text  # noqa: F401

pytestmark = pytest.mark.browser


def write_logs(log_dir: str) -> None:
    from tb_activations import ActivationLogger
    from tests.test_attribution import quadrant_model
    from tests.test_attribution_step import quadrant_probes

    with ActivationLogger(
        quadrant_model(),
        quadrant_probes(),
        log_dir,
        layers=["conv"],
        attribution=("gradcam",),
        attribution_layer="mask",
        attribution_classes=["ne"],
        attribution_top_k=2,
        class_names=["nw", "ne", "sw", "se"],
    ) as logger:
        for step in (0, 1, 2):
            logger.log(step)


def test_explain_panel_shows_the_map_and_picks_misclassified_probes(browser, tmp_path):  # noqa: F811
    log_dir = tmp_path / "logs"
    write_logs(str(log_dir))
    tb = TensorBoard(str(log_dir), tmp_path, load_fast=False)
    try:
        tb.wait_listening()
        tb.wait_plugin_enabled()
        page, problems = open_dashboard(browser, tb.url)
        wait_text(page, "#tba-explain-now", "a at step 2: predicted nw")
        page.wait_for_function(
            "() => document.querySelector('#tba-explain-image')?.naturalWidth === 17"
        )
        assert page.locator(".tba-explain-thumb").count() == 3
        # Shown at the size the drawn maps of other classes get: 8 px maps at 24x, 192 px high.
        page.wait_for_function(
            "() => document.querySelector('#tba-explain-image').getBoundingClientRect().height === 192"
        )
        options = page.eval_on_selector_all("#tba-probe option", "os => os.map(o => o.text)")
        assert options == ["a (0)", "b (2) \u2717 misclassified"], options
        page.locator("#tba-explain-misclassified button", has_text="b").click()
        wait_text(page, "#tba-explain-now", "b at step 2: predicted se (left) · label sw (right)")
        check_class_chooser(page, log_dir)
        assert problems == []
    finally:
        tb.stop()


CANVAS_PIXELS = """() => {
  const c = document.querySelector('#tba-explain-canvas');
  return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)];
}"""


def check_class_chooser(page, log_dir) -> None:
    """Any class by name (typed, or from the list of logged classes) and by index; the
    map drawn in the browser equals the logger's own overlay of the stored map."""
    import numpy as np

    from tb_activations.attribution.step import overlay_map
    from tests.conftest import read_run
    from tests.test_attribution_step import quadrant_probes, tensor_of

    options = page.eval_on_selector_all("#tba-explain-class option", "os => os.map(o => o.text)")
    assert options == ["predicted class", "label's class", "ne (1)", "2nd highest score"], options
    page.select_option("#tba-probe", "0")
    page.fill("#tba-explain-class-input", "ne")
    page.press("#tba-explain-class-input", "Enter")
    wait_text(page, "#tba-explain-now", "a at step 2: predicted nw · map of ne (1) · p = ")
    page.wait_for_function("() => document.querySelector('#tba-explain-canvas')?.width === 8")
    height_shown = "document.querySelector('#tba-explain-canvas').getBoundingClientRect().height"
    assert page.evaluate(f"() => {height_shown}") == 192  # as the predicted class's picture
    assert page.locator(".tba-explain-history canvas").count() == 3
    width, height, data = page.evaluate(CANVAS_PIXELS)
    drawn = np.asarray(data, np.uint8).reshape(height, width, 4)[..., :3]
    maps, _ = tensor_of(read_run(log_dir / "activations"), "attribution/gradcam/class_maps")
    want = overlay_map(quadrant_probes().display[0], maps[0, 0])
    assert np.abs(drawn.astype(int) - want).max() <= 1, (drawn, want)
    # By index: class 3 of probe b is its prediction (shown); class 2 of probe a was not logged.
    page.select_option("#tba-probe", "1")
    page.fill("#tba-explain-class-input", "3")
    page.press("#tba-explain-class-input", "Enter")
    wait_text(page, "#tba-explain-now", "b at step 2: predicted se · map of se (3)")
    page.select_option("#tba-probe", "0")
    page.fill("#tba-explain-class-input", "2")
    page.press("#tba-explain-class-input", "Enter")
    wait_text(
        page, "#tba-explain-missing", "Class 2 was not logged. Log it with attribution_classes=[2]"
    )
    # The logged class from the list, and the label's class of the misclassified probe.
    page.select_option("#tba-explain-class", "1")
    wait_text(page, "#tba-explain-now", "map of ne (1)")
    page.select_option("#tba-probe", "1")
    page.select_option("#tba-explain-class", "label")
    wait_text(page, "#tba-explain-now", "b at step 2: predicted se · map of sw (2) (the label)")
    page.select_option("#tba-explain-class", "rank2")
    wait_text(page, "#tba-explain-now", "· 2nd highest score")
    page.wait_for_function("() => !document.querySelector('#tba-explain-canvas')?.hidden")
