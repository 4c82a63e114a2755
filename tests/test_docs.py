"""The documentation site (issue 30): ``mkdocs build --strict`` passes, so a broken link, a page
missing from the navigation or an API name that does not resolve fails the suite; the API
reference covers every public name, and every name it shows has a docstring."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .test_repo import undocumented

ROOT = Path(__file__).resolve().parent.parent


def _build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(root / "mkdocs.yml"),
                           "-d", str(site)], cwd=root, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def _reference_targets() -> list[str]:
    pages = (ROOT / "docs" / "reference").glob("*.md")
    return [target for page in pages for target in re.findall(r"^::: ([\w.]+)", page.read_text(), re.M)]


def _resolve(dotted: str) -> object:
    module, _, attribute = dotted.rpartition(".")
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError:
        return getattr(importlib.import_module(module), attribute)


def test_the_site_builds_strictly_with_the_api_reference_from_the_docstrings(tmp_path: Path) -> None:
    built = _build(ROOT, tmp_path / "site")
    assert built.returncode == 0, built.stdout + built.stderr
    page = (tmp_path / "site" / "reference" / "asyncllm" / "index.html").read_text()
    text = " ".join(re.sub(r"<[^>]+>", "", page).split())
    doc = " ".join((inspect.getdoc(importlib.import_module("dataformer_nb").AsyncLLM.plan) or "").split())
    assert "agenerate" in text and doc.replace("`", "")[:60] in text  # the docstring, rendered
    assert "What the cache trusts" in (tmp_path / "site" / "security" / "index.html").read_text()  # included whole
    assert "## 0.3.0" not in (tmp_path / "site" / "changelog" / "index.html").read_text()  # rendered, not raw


def test_a_broken_link_fails_the_docs_build(tmp_path: Path) -> None:
    for name in ("mkdocs.yml", "SECURITY.md", "CHANGELOG.md"):
        shutil.copy2(ROOT / name, tmp_path / name)
    for folder in ("docs", "dataformer_nb"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    with (tmp_path / "docs" / "guides" / "panel.md").open("a") as page:
        page.write("\nSee [the old page](no-such-page.md).\n")
    built = _build(tmp_path, tmp_path / "site")
    assert built.returncode != 0 and "no-such-page.md" in built.stdout + built.stderr


def test_the_api_reference_shows_every_public_name_and_each_has_a_docstring() -> None:
    import dataformer_nb

    shown: set[str] = set()
    missing: list[str] = []
    for target in _reference_targets():
        obj = _resolve(target)
        members = ([(name, value) for name, value in vars(obj).items() if not name.startswith("_")
                    and (inspect.isclass(value) or inspect.isfunction(value)) and value.__module__ == obj.__name__]
                   if inspect.ismodule(obj) else [(target.rsplit(".", 1)[-1], obj)])
        for name, value in members:
            shown.add(name)
            missing += undocumented(name, value)
    assert not missing, f"shown in the API reference without a docstring: {missing}"
    left_out = set(dataformer_nb.__all__) - shown
    assert not left_out, f"public but not in docs/reference: {left_out}"
