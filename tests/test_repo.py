"""Repository hygiene that CI enforces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean() -> None:
    out = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_is_clean() -> None:
    out = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def undocumented(name: str, obj: object) -> list[str]:
    """``name`` and each of its public methods and properties that has no docstring."""
    import inspect

    missing = [] if inspect.getdoc(obj) else [name]
    for member, value in vars(obj).items() if inspect.isclass(obj) else ():
        if not member.startswith("_") and (callable(value) or isinstance(value, property)):
            doc = inspect.getdoc(value) if isinstance(value, property) else inspect.getdoc(getattr(obj, member))
            missing += [] if doc else [f"{name}.{member}"]
    return missing


def test_every_public_name_is_documented() -> None:
    import dataformer_nb

    missing = [gap for name in dataformer_nb.__all__ for gap in undocumented(name, getattr(dataformer_nb, name))]
    assert not missing


def test_the_notebooks_extra_brings_what_the_example_notebooks_import() -> None:
    import json
    import re

    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11 on
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["notebooks"]
    installed = {re.split(r"[<>=!~; \[]", req, maxsplit=1)[0].lower().replace("_", "-") for req in wanted}
    distributions = {"dotenv": "python-dotenv", "IPython": "ipython", "PIL": "pillow"}
    missing = set()
    for notebook in (ROOT / "example_notebooks").glob("*.ipynb"):
        if notebook.name.endswith(".executed.ipynb"):
            continue
        for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
            for module in re.findall(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", "".join(cell["source"]), re.M):
                if module in sys.stdlib_module_names or module == "dataformer_nb":
                    continue
                if distributions.get(module, module).lower().replace("_", "-") not in installed:
                    missing.add(f"{notebook.name}: {module}")
    assert not missing, "add these to the notebooks extra: " + ", ".join(sorted(missing))


def test_quickstart_runs_offline(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "dataformer_nb", "quickstart", "--cache-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "4 requests: 4 sent, 0 cached" in out.stdout and "4 requests: 0 sent, 4 cached" in out.stdout


def test_quickstart_tells_a_first_run_from_a_re_run(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "dataformer_nb", "quickstart", "--cache-dir", str(tmp_path)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    assert "First run" in first and "A re-run" not in first
    assert "A re-run: every answer came from the cache" in again and "First run" not in again
    assert "Echo: Why should people read books?" in again and "quickstart  4" in again
