"""The notebooks in a real browser: JupyterLab on 127.0.0.1 (token, temp folder), headless
Chromium driven by selenium, a live kernel.

- ``30_compare``: run all cells, change the experiment dropdown; the table changes and each
  figure output holds one non-blank image.
- ``21_router_slots``: run all cells (it trains its two tiny mixtures), move the layer slider;
  the slider's output holds one new, non-blank image.

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``), ``selenium`` and JupyterLab in the environment. Skipped with the
reason where one is missing; with ``CI_REQUIRE_BROWSER=1`` a missing one is a failure.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
LAB = Path(sys.executable).with_name("jupyter-lab")
OUTPUT_AREA = ".widget-output"  # an ipywidgets 8 Output's rendered area (jupyterlab-manager)


def _missing() -> list[str]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER, LAB) if not p.is_file()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install selenium)")
    return missing


@pytest.fixture(scope="module")
def browser():
    missing = _missing()
    if missing:
        message = f"browser test needs {', '.join(missing)}"
        if os.environ.get("CI_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{message} (CI_REQUIRE_BROWSER=1)")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1600,1200"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, browser):
    """JupyterLab serving a copy of notebooks/ with its own outputs/ (two experiments)."""
    from tests.conftest import write_run

    root = tmp_path_factory.mktemp("lab")
    for notebook in ("30_compare.ipynb", "21_router_slots.ipynb"):
        shutil.copy(REPO / "notebooks" / notebook, root / notebook)
    outputs = root / "outputs"
    for seed in (0, 1):
        write_run(outputs, "exp_a", "lora", seed=seed, trainable=5000, score=0.6 + seed / 10)
    write_run(outputs, "exp_a", "bitfit", trainable=1000, score=0.5, gflops=1.3)
    write_run(outputs, "exp_b", "adapter", trainable=8000, score=0.3, gflops=2.0)
    write_run(outputs, "exp_b", "linear", trainable=100, score=0.2, gflops=0.5)
    token, port = uuid.uuid4().hex, _free_port()
    env = {**os.environ, "PETL_KIT_OUTPUTS": str(outputs), "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # fmt: skip
    env.pop("MPLBACKEND", None)  # the notebooks' %matplotlib inline decides
    server = subprocess.Popen(
        [str(LAB), "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.expose_app_in_browser=True", f"--LabApp.workspaces_dir={root / '.ws'}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                server.terminate()
                pytest.fail(f"JupyterLab did not start on {base}")
            time.sleep(0.5)
    yield base, token
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:  # a server stuck in its shutdown must not outlive the test
        server.kill()
        server.wait(timeout=30)


def _wait(driver, condition, timeout: float, what: str):
    """``condition(driver)`` once truthy; an element replaced while it was read (a redrawn
    output) only means: ask again at the next poll."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5,
                             ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: condition(d), message=f"timed out waiting for {what}"
        )  # fmt: skip
    except TimeoutException:
        folder = Path(os.environ.get("BROWSER_SCREENSHOTS", tempfile.gettempdir()))
        shot = folder / f"browser-timeout-{uuid.uuid4().hex[:8]}.png"
        driver.save_screenshot(str(shot))
        raise TimeoutException(f"timed out waiting for {what} (screenshot: {shot})") from None


def _open_and_run_all(driver, lab, notebook: str) -> None:
    from selenium.webdriver.common.by import By

    base, token = lab
    driver.get(f"{base}/lab/tree/{notebook}?token={token}&reset")  # no restored tabs
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"), 120,
          f"{notebook} to open")  # fmt: skip
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator"
                                            "[data-status='idle']"), 120, "the kernel")  # fmt: skip
    # JupyterLab's own command (window.jupyterapp, exposed by --LabApp.expose_app_in_browser),
    # not its menus, whose DOM changes between releases
    _wait(driver, lambda d: d.execute_script(
        "const app = window.jupyterapp; const nb = app && app.shell.currentWidget;"
        "return !!(nb && nb.context && nb.context.path === arguments[0]"
        " && nb.sessionContext && nb.sessionContext.session"
        " && nb.sessionContext.session.kernel"
        " && app.commands.isEnabled('notebook:run-all-cells'));", notebook), 60,
        "the notebook's kernel and its run-all command")  # fmt: skip
    # not awaited: the command's promise settles only when every cell has run
    driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")


def _pngs(area) -> list[bytes]:
    from selenium.webdriver.common.by import By

    out = []
    for img in area.find_elements(By.CSS_SELECTOR, "img"):
        src = img.get_attribute("src") or ""
        if src.startswith("data:image/png;base64,"):
            out.append(base64.b64decode(src.split(",", 1)[1]))
    return out


def _drawn(png: bytes) -> bool:
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    return pixels.std() > 10 and (pixels < 100).mean() > 0.005


def test_compare_dashboard_follows_the_experiment_dropdown(browser, lab):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _open_and_run_all(browser, lab, "30_compare.ipynb")

    def areas(d):
        found = d.find_elements(By.CSS_SELECTOR, OUTPUT_AREA)
        return found if len(found) >= 3 and all(_pngs(a) for a in found[1:3]) else None

    table, pareto, curves = _wait(browser, areas, 300, "the dashboard's figures")[:3]
    before, drawn_before = table.text, [_pngs(a) for a in (pareto, curves)]
    assert "lora" in before and "bitfit" in before
    Select(
        browser.find_elements(By.CSS_SELECTOR, ".widget-dropdown select")[0]
    ).select_by_visible_text("exp_b")
    _wait(browser, lambda d: table.text != before and "adapter" in table.text, 60,
          "the table to follow the experiment")  # fmt: skip

    def redrawn(d):
        now = [_pngs(a) for a in (pareto, curves)]
        new = all(len(p) == 1 and p != was for p, was in zip(now, drawn_before, strict=True))
        return now if new else None

    for pngs in _wait(browser, redrawn, 60, "both figures to be redrawn for the new experiment"):
        assert len(pngs) == 1 and _drawn(pngs[0]), "a figure output is not one drawn image"


def test_router_slots_slider_redraws(browser, lab):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _open_and_run_all(browser, lab, "21_router_slots.ipynb")

    def slider_output(d):
        sliders = d.find_elements(By.CSS_SELECTOR, ".widget-interact .noUi-handle")
        found = d.find_elements(By.CSS_SELECTOR, f".widget-interact {OUTPUT_AREA}")
        return (sliders, found[0]) if sliders and found and _pngs(found[0]) else None

    sliders, area = _wait(browser, slider_output, 600, "the slider's figure (training included)")
    first = _pngs(area)
    assert len(first) == 1 and _drawn(first[0])
    sliders[0].click()  # the layer slider: one layer down
    sliders[0].send_keys(Keys.ARROW_LEFT)

    def redrawn(d):  # the output is found afresh each time: the redraw replaces its elements
        found = slider_output(d)
        now = _pngs(found[1]) if found else []
        return now if now and now[0] != first[0] else None

    now = _wait(browser, redrawn, 60, "a redrawn slot")
    assert len(now) == 1 and _drawn(now[0]), "the slider's output is not one drawn image"
