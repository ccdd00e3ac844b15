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
        options = page.eval_on_selector_all("#tba-probe option", "os => os.map(o => o.text)")
        assert options == ["a (0)", "b (2) \u2717 misclassified"], options
        page.locator("#tba-explain-misclassified button", has_text="b").click()
        wait_text(page, "#tba-explain-now", "b at step 2: predicted se (left) · label sw (right)")
        assert problems == []
    finally:
        tb.stop()
