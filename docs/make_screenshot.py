"""Make docs/dashboard.png: the Activations tab on the demo's own run.

Usage: ``python docs/make_screenshot.py`` (about a minute: trains the demo,
starts TensorBoard on 127.0.0.1, drives Debian's Chromium with Playwright).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PORT_LINE = re.compile(r"TensorBoard \S+ at http://127\.0\.0\.1:(\d+)/")


def main() -> int:
    from playwright.sync_api import sync_playwright

    from tb_activations.metadata import SAMPLING_FLAG

    tmp = Path(tempfile.mkdtemp(prefix="tba_shot_"))
    logs = tmp / "logs"
    exe = Path(sys.executable).with_name("tb-activations")
    subprocess.run([str(exe), "demo", "--log-dir", str(logs), "--epochs", "12", "-q"], check=True)
    err = open(tmp / "tb.err", "w")  # noqa: SIM115 - closed below
    tb = subprocess.Popen(
        [str(Path(sys.executable).with_name("tensorboard")), "--logdir", str(logs), "--host", "127.0.0.1",
         "--port", "0", SAMPLING_FLAG],
        stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    try:
        url = None
        for _ in range(300):
            match = PORT_LINE.search((tmp / "tb.err").read_text(errors="replace"))
            if match:
                url = f"http://127.0.0.1:{match.group(1)}"
                break
            time.sleep(0.2)
        if url is None:
            raise SystemExit("TensorBoard did not start")
        time.sleep(5)  # let it load the run
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                ],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url + "/data/plugin_entry.html?name=activations")
            page.wait_for_selector("#tba-layer option", state="attached", timeout=60_000)
            page.select_option("#tba-probe", index=2)
            page.select_option("#tba-layer", "conv2")
            page.wait_for_selector(".tba-mosaic-img", timeout=30_000)
            time.sleep(2)
            box = page.locator("#tba-topk").bounding_box()
            page.mouse.click(box["x"] + 5, box["y"] + box["height"] / 2)  # the strongest channel
            time.sleep(3)
            page.screenshot(path=str(HERE / "dashboard.png"), full_page=True)
            browser.close()
    finally:
        tb.terminate()
        tb.wait(timeout=15)
        err.close()
    print(HERE / "dashboard.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
