"""JupyterLab in a real browser: every example notebook runs whole with Run All, offline and with
no key (no error output, every code cell run); the caching notebook's panel fits its table at
1,000 and 1,600 px and deletes a project; the quick start; a large batch interrupted from the
toolbar and re-run; the batch jobs notebook's pending batch in the panel.

Needs Debian's Chromium at /usr/bin/chromium (``.ci/run`` installs it when missing); without
it the test is skipped with that reason.
"""

from __future__ import annotations

import contextlib
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
from typing import Any

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


NOTEBOOKS = tuple(sorted(p.stem for p in (ROOT / "example_notebooks").glob("*.ipynb")
                         if not p.stem.endswith(".executed")))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[str]:
    """JupyterLab serving copies of the example notebooks: the URL of a notebook, ``{name}`` left to fill."""
    for name in NOTEBOOKS:
        shutil.copy(ROOT / "example_notebooks" / f"{name}.ipynb", tmp_path)
    # Start the notebook's kernel without asking: the "Select Kernel" dialog could swallow Run All.
    settings = tmp_path / "lab-settings"
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"autoStartDefaultKernel": True}))
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)  # no news toast over the screenshots
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false"}))
    token, port = secrets.token_hex(16), _free_port()
    log = open(tmp_path / "lab.log", "w")  # noqa: SIM115 - closed below
    lab = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}", "--allow-root",
         f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",  # none left from another run
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
        # A workspace per notebook: JupyterLab would reopen the last notebook beside the next one.
        yield f"{base}/lab/workspaces/{{name}}/tree/{{name}}.ipynb?token={token}"
    finally:
        lab.terminate()
        lab.wait(timeout=30)
        log.close()


@contextlib.contextmanager
def browser_page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        # JupyterLab sometimes asks which kernel to start; the notebook's own is preselected.
        # Its accept button is found by class (by role and name it was once not found at all).
        dialog = page.locator(".jp-Dialog")
        page.add_locator_handler(dialog, lambda: dialog.locator("button.jp-mod-accept").last.click(timeout=10_000))
        try:
            yield page
        except Exception:
            page.screenshot(path=ARTIFACTS / "jupyterlab_failure.png")
            raise
        finally:
            browser.close()


def close_sidebar(page: Any) -> None:
    """Close JupyterLab's left sidebar (the file browser, open by default), as for a screenshot."""
    page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()


def run_all(page: Any, url: str, done: Any, name: str) -> None:
    """Open ``url`` and Run All until ``done`` (a locator) shows. JupyterLab sometimes drops a Run All
    given while it is still starting, or renders widgets as text when its widget manager came up
    after the kernel: then reload and run again."""
    from playwright.sync_api import expect

    page.goto(url)
    for attempt in range(3):
        if attempt:
            page.reload()
        page.wait_for_selector(".jp-Notebook", timeout=90_000)
        expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=90_000)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name=re.compile("^Run All Cells")).click()
        try:
            expect(done).to_have_count(1, timeout=45_000)
            return
        except AssertionError:
            page.screenshot(path=ARTIFACTS / f"{name}_run_all_attempt_{attempt}.png")
            if attempt == 2:
                raise


def _clipped_or_wrapped(panel: Any, scrolling: bool = False) -> list[str]:
    """What in the panel does not fit: table cells and titles cut short (a Label ends in "…"),
    header parts on several lines, and widgets past the output's right edge (unless ``scrolling``:
    then the table may scroll sideways, but must not be cut)."""
    return panel.evaluate("""(root, scrolling) => {
        const bad = [];
        const right = root.getBoundingClientRect().right + 1;
        for (const el of root.querySelectorAll('.widget-gridbox .widget-label, .widget-button')) {
            if (el.scrollWidth > el.clientWidth + 1) bad.push('clipped: ' + el.textContent);
        }
        for (const el of root.querySelectorAll('.widget-html span[style*="nowrap"]')) {
            const bottoms = new Set([...el.getClientRects()].map(r => Math.round(r.bottom / 4)));
            if (bottoms.size > 1) bad.push('wrapped: ' + el.textContent);  // its boxes on several lines
        }
        for (const el of root.querySelectorAll('.widget-label, .widget-button, .widget-html span')) {
            const scrolled = el.closest('.widget-vbox[style*="overflow: auto"]');
            if (el.getBoundingClientRect().right > right && !(scrolling && scrolled)) {
                bad.push('cut off: ' + el.textContent);
            }
        }
        return bad;
    }""", scrolling)


def test_panel_deletes_a_project_in_jupyterlab(lab: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with browser_page() as page:
        row = page.locator(".widget-gridbox", has=page.get_by_text("maths", exact=True))
        run_all(page, lab.format(name="caching_projects"), row, "caching_projects")
        _assert_ran_whole(page, tmp_path / "caching_projects.ipynb")
        header = page.locator(".widget-html", has_text="responses,").first
        cache_dir = re.search(r"Cache (\S+):", header.inner_text()).group(1)
        assert "maths" in {p.name for p in ResponseCache(cache_dir).projects()}
        panel = page.locator(".jp-OutputArea-output", has=row)
        page.set_viewport_size({"width": 1000, "height": 900})  # the file browser open: the table scrolls
        page.wait_for_function("window.innerWidth === 1000")
        assert _clipped_or_wrapped(panel, scrolling=True) == []
        close_sidebar(page)  # then it fits
        for width in (1000, 1600):  # the table fits its content at both, and is kept in the README
            page.set_viewport_size({"width": width, "height": 900})
            page.wait_for_function(f"window.innerWidth === {width}")
            expect(panel).to_be_visible()
            assert _clipped_or_wrapped(panel) == [], width
            panel.screenshot(path=ARTIFACTS / f"cache_panel_{width}.png")
        page.set_viewport_size({"width": 1200, "height": 900})

        row.get_by_role("button", name="Delete").click()
        row.get_by_role("button", name="Confirm").click()
        expect(row).to_have_count(0, timeout=30_000)
        expect(page.get_by_text(re.compile("^Freed \\d+ response"))).to_be_visible(timeout=30_000)
        page.locator(".jp-OutputArea-output").last.screenshot(path=ARTIFACTS / "cache_panel_after_delete.png")

        # Browse a project's entries: a page of prompts and answers opens under its row.
        new_row = page.locator(".widget-gridbox", has=page.get_by_text("new", exact=True))
        new_row.get_by_role("button", name="Browse").click()
        expect(page.get_by_text(re.compile(r"^entries 1-\d+$"))).to_be_visible(timeout=30_000)
        expect(page.get_by_text("Echo: Why should people read books?").last).to_be_visible(timeout=30_000)
        page.locator(".jp-OutputArea-output").last.screenshot(path=ARTIFACTS / "cache_panel_browse.png")
        search = page.get_by_placeholder("filter: text in the prompt or answer")
        search.fill("olympics")
        search.press("Enter")
        expect(page.get_by_text(re.compile(r"^entries 1-1 matching 'olympics'$"))).to_be_visible(timeout=30_000)
        entry = page.locator(".widget-gridbox", has=page.get_by_text("Echo: Name people who have won medals"))
        entry.get_by_role("button", name="Delete").click()
        expect(page.get_by_text("no entries matching 'olympics'")).to_be_visible(timeout=30_000)
        page.get_by_role("button", name="Export").click()
        expect(page.get_by_text(re.compile(r"^Exported 1 response of new to "))).to_be_visible(timeout=30_000)

    projects = {p.name: p for p in ResponseCache(cache_dir).projects()}
    assert "maths" not in projects and projects["new"].responses == 1  # one entry deleted from the panel


def test_the_quick_start_and_an_interrupted_large_batch_in_jupyterlab(lab: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with browser_page() as page:
        rerun = page.get_by_text("4 requests: 0 sent, 4 cached, 0 failed · project quickstart")
        run_all(page, lab.format(name="quickstart"), rerun, "quickstart")
        _assert_ran_whole(page, tmp_path / "quickstart.ipynb")
        page.locator(".jp-NotebookPanel").screenshot(path=ARTIFACTS / "quickstart.png")

        bar = page.locator(".jp-OutputArea-output", has_text=re.compile(r"generate:\s+\d+%")).first
        run_all(page, lab.format(name="large_batch"), bar, "large_batch")
        expect(bar).to_contain_text(re.compile(r"[1-9]\d*/2000"), timeout=60_000)  # some have arrived
        page.locator("button[data-command='notebook:interrupt-kernel'], "
                     "jp-button[data-command='notebook:interrupt-kernel']").first.click()
        message = page.get_by_text(re.compile(r"^KeyboardInterrupt: interrupted: \d+ new responses saved"))
        expect(message).to_be_visible(timeout=60_000)
        counts = re.search(r"(\d+) new responses .* the other (\d+)", message.inner_text())
        saved, unsent = map(int, counts.groups())
        assert saved + unsent == 2000 and saved > 0 and unsent > 0
        cell = page.locator(".jp-CodeCell", has_text="results = llm.generate(requests)")  # its own cell
        assert "Traceback" not in cell.inner_text() and "threading" not in cell.inner_text()
        cell.screenshot(path=ARTIFACTS / "large_batch_interrupted.png")

        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")  # the server cell is not re-run: same URL, same keys
        summary = f"2000 requests: {unsent} sent, {saved} cached, 0 failed · project large_batch"
        expect(cell.get_by_text(summary)).to_be_visible(timeout=120_000)
        cell.screenshot(path=ARTIFACTS / "large_batch_rerun.png")
        # The rest of the notebook from the cell after it (selected by Shift+Enter): then it has run whole.
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name=re.compile("^Run Selected Cell and All Below")).click()
        expect(page.locator(".jp-CodeCell").last.locator(".jp-InputPrompt", has_text=re.compile(r"\[\d+\]"))
               ).to_have_count(1, timeout=120_000)
        _assert_ran_whole(page, tmp_path / "large_batch.ipynb")


def test_batch_jobs_and_the_pending_batch_in_the_panel_in_jupyterlab(lab: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with browser_page() as page:
        pending = page.get_by_text("1 batch pending: run the same generate(..., batch=True) to collect")
        run_all(page, lab.format(name="batch_jobs"), pending, "batch_jobs")
        _assert_ran_whole(page, tmp_path / "batch_jobs.ipynb")
        panel = page.locator(".jp-OutputArea-output", has=pending)
        expect(panel.get_by_text("cancelled_demo", exact=True)).to_be_visible(timeout=30_000)
        expect(panel.get_by_text("batch_demo", exact=True).first).to_be_visible(timeout=30_000)
        expect(page.get_by_text(re.compile(r"300 requests: 299 sent, 0 cached, 1 failed \(http 400: 1\)"))
               ).to_be_visible(timeout=30_000)
        close_sidebar(page)
        panel.screenshot(path=ARTIFACTS / "batch_panel.png")



# Every example notebook runs with Run All here, but for those the tests above drive themselves (and
# check with _assert_ran_whole): a new notebook is included without naming it.
OPENED_ABOVE = ("batch_jobs", "caching_projects", "large_batch", "quickstart")


@pytest.mark.parametrize("name", [name for name in NOTEBOOKS if name not in OPENED_ABOVE])
def test_an_example_notebook_runs_with_run_all_offline_and_without_keys(lab: str, name: str, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The notebooks the other tests do not open; those check theirs with ``_assert_ran_whole``."""
    with browser_page() as page:
        last = page.locator(".jp-CodeCell").last.locator(".jp-InputPrompt", has_text=re.compile(r"\[\d+\]"))
        error = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                             has_text=re.compile(r"Error|Exception|Traceback|Interrupt")).first
        run_all(page, lab.format(name=name), last.or_(error), name)  # Run All stops at an error
        _assert_ran_whole(page, tmp_path / f"{name}.ipynb")


def _assert_ran_whole(page: Any, path: Path) -> None:
    """Save the notebook open in ``page`` and check, from the file, that every code cell ran and
    none has an error output (Run All stops at the first error; a cell that needs a key must say so
    and move on)."""
    from playwright.sync_api import expect

    expect(page.locator(".jp-InputPrompt", has_text="[*]")).to_have_count(0, timeout=120_000)
    page.keyboard.press("Control+s")
    expect(page.locator(".jp-mod-dirty")).to_have_count(0, timeout=30_000)
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    errors = [(i, o.get("ename"), o.get("evalue", "")[:200]) for i, c in enumerate(cells)
              for o in c["outputs"] if o["output_type"] == "error"]
    assert errors == [], errors
    assert [i for i, c in enumerate(cells) if c["execution_count"] is None] == []
