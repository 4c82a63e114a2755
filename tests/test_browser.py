"""JupyterLab in a real browser: run the caching notebook, delete a project from the panel.

Needs Debian's Chromium at /usr/bin/chromium (``.ci/run`` installs it when missing); without
it the test is skipped with that reason.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dataformer_nb import ResponseCache

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[str]:
    shutil.copy(ROOT / "example_notebooks" / "caching_projects.ipynb", tmp_path)
    # Start the notebook's kernel without asking: the "Select Kernel" dialog could swallow Run All.
    settings = tmp_path / "lab-settings"
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"autoStartDefaultKernel": True}))
    token, port = secrets.token_hex(16), _free_port()
    log = open(tmp_path / "lab.log", "w")  # noqa: SIM115 - closed below
    lab = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}", "--allow-root",
         "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings)},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(240):  # the server's startup cannot be awaited from here: poll its API
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                if lab.poll() is not None:
                    pytest.fail((tmp_path / "lab.log").read_text())
                time.sleep(0.25)
        yield f"{base}/lab/tree/caching_projects.ipynb?token={token}"
    finally:
        lab.terminate()
        lab.wait(timeout=30)
        log.close()


def test_panel_deletes_a_project_in_jupyterlab(jupyterlab: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        # JupyterLab sometimes asks which kernel to start; the notebook's own is preselected.
        # Its accept button is found by class (by role and name it was once not found at all).
        dialog = page.locator(".jp-Dialog")
        page.add_locator_handler(dialog, lambda: dialog.locator("button.jp-mod-accept").last.click(timeout=10_000))
        try:
            page.goto(jupyterlab)
            row = page.locator(".widget-gridbox", has=page.get_by_text("maths", exact=True))
            # JupyterLab sometimes drops a Run All given while it is still starting, or renders the
            # widgets as text when its widget manager came up after the kernel: reload and run again.
            for attempt in range(3):
                if attempt:
                    page.reload()
                page.wait_for_selector(".jp-Notebook", timeout=90_000)
                expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=90_000)
                page.get_by_role("menuitem", name="Run", exact=True).click()
                page.get_by_role("menuitem", name=re.compile("^Run All Cells")).click()
                try:
                    expect(row).to_have_count(1, timeout=45_000)
                    break
                except AssertionError:
                    page.screenshot(path=ARTIFACTS / f"run_all_attempt_{attempt}.png")
                    if attempt == 2:
                        raise
            header = page.locator(".widget-html", has_text="responses,").first
            cache_dir = re.search(r"Cache (\S+):", header.inner_text()).group(1)
            assert "maths" in {p.name for p in ResponseCache(cache_dir).projects()}

            row.get_by_role("button", name="Delete").click()
            row.get_by_role("button", name="Confirm").click()
            expect(row).to_have_count(0, timeout=30_000)
            expect(page.get_by_text(re.compile("^Freed \\d+ response"))).to_be_visible(timeout=30_000)
            page.locator(".jp-OutputArea-output").last.screenshot(path=ARTIFACTS / "cache_panel_after_delete.png")
        except Exception:
            page.screenshot(path=ARTIFACTS / "jupyterlab_failure.png")
            raise
        finally:
            browser.close()

    projects = {p.name for p in ResponseCache(cache_dir).projects()}
    assert "maths" not in projects and "new" in projects
