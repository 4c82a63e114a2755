"""The package as users get it (issue 30): the sdist and wheel built from the tracked files, checked
with twine, and the wheel installed into a fresh venv outside the source tree, where the quick
start, the extension in a kernel, the panel's text form and the batch fake all run from it.

Every other test runs on the editable install, so a file left out of the wheel would not be
noticed there. Nothing is downloaded: the wheel is built without build isolation and installed
without its dependencies, which the fresh venv finds in this test environment's site-packages
(a path file, which adds that directory but does not run the editable install's hook there).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

import dataformer_nb

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and wheel, built from a copy of the files git tracks (what a release is made of)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("the wheel is built from the files git tracks: no git checkout here")
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; its python."""
    home = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)], check=True, timeout=120)
    python = home / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    (wheel,) = dist.glob("*.whl")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                "--no-index", "--quiet", str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "test-environment-dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    return python


def _run(python: Path, code: str, cwd: Path) -> str:
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd,
                         env={**os.environ, "PYTHONPATH": "", "DATAFORMER_CACHE_URL": ""})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_sdist_and_wheel_pass_twine_check_and_hold_what_the_package_needs(dist: Path) -> None:
    files = sorted(dist.iterdir())
    assert sorted(f.suffix for f in files) == [".gz", ".whl"], files
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, files)],
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (wheel,) = (f for f in files if f.suffix == ".whl")
    assert wheel.name.startswith(f"dataformer_nb-{dataformer_nb.__version__}-")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"dataformer_nb-{dataformer_nb.__version__}.dist-info/METADATA").decode()
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "dataformer_nb").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert shipped <= names, f"left out of the wheel: {sorted(shipped - names)}"
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "example_notebooks/"))]
    for field in ("License-Expression: MIT", "Classifier: Typing :: Typed", "Requires-Python: >=3.10",
                  "Provides-Extra: team", "Provides-Extra: docs", "Provides-Extra: notebooks"):
        assert field in metadata, field


def test_the_wheel_runs_the_quick_start_and_the_batch_fake_outside_the_source_tree(venv: Path, tmp_path: Path) -> None:
    where = _run(venv, "import dataformer_nb; print(dataformer_nb.__file__, dataformer_nb.__version__)", tmp_path)
    assert where.startswith(str(venv.parent.parent)) and where.split()[1] == dataformer_nb.__version__, where
    first = subprocess.run([str(venv), "-m", "dataformer_nb", "quickstart", "--cache-dir", str(tmp_path / "qs")],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert first.returncode == 0 and "4 requests: 4 sent, 0 cached" in first.stdout, first.stdout + first.stderr
    batch = _run(venv, (
        "from dataformer_nb import AsyncLLM\n"
        "from dataformer_nb.testing import FakeBatchServer\n"
        "service = FakeBatchServer(process_seconds=0, key='sk-demo').start()\n"
        f"llm = AsyncLLM(url=service.url, api_key='sk-demo', model='gpt-4o-mini', cache_dir={str(tmp_path / 'b')!r},"
        " batch_poll_interval=0.05, progress=False, verbose=False)\n"
        "requests = [{'messages': [{'role': 'user', 'content': f'n{i}'}]} for i in range(5)]\n"
        "results = llm.generate(requests, batch=True)\n"
        "print(service.creations, [r.error for r in results].count(None), llm.generate(requests, batch=True)"
        ".summary.cached)\n"), tmp_path)
    assert batch.split() == ["1", "5", "5"], batch


def test_the_wheel_loads_as_an_extension_in_a_kernel_and_shows_the_panel_as_text(
        venv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "jupyter" / "kernels" / "wheel"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(venv), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "dataformer_nb wheel", "language": "python",
        "env": {"PYTHONPATH": "", "DATAFORMER_CACHE_URL": ""}}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    km, kc = start_new_kernel(kernel_name="wheel", cwd=str(tmp_path))
    try:
        shown: list[str] = []

        def keep(msg: dict) -> None:
            content = msg["content"]
            if msg["msg_type"] == "stream":
                shown.append(content["text"])
            elif msg["msg_type"] in ("execute_result", "display_data"):
                shown.append(content["data"].get("text/plain", ""))
            elif msg["msg_type"] == "error":
                shown.append("ERROR " + content["ename"] + ": " + content["evalue"])

        cache = str(tmp_path / "kernel_cache")
        code = (f"%load_ext dataformer_nb\n%config Dataformer.cache_dir = {cache!r}\n"
                "import dataformer_nb; print('from', dataformer_nb.__file__)\n")
        kc.execute_interactive(code, timeout=120, output_hook=keep)
        kc.execute_interactive("%%generate echo -o results\nWhy should people read books?", timeout=120,
                               output_hook=keep)
        kc.execute_interactive(f"from dataformer_nb import CachePanel\nCachePanel(cache_dir={cache!r})",
                               timeout=120, output_hook=keep)
        text = "\n".join(shown)
        assert "ERROR" not in text, text
        assert f"from {venv.parent.parent}" in text, text
        assert "1 request: 1 sent, 0 cached" in text, text
        panel = text.split("Echo: Why should people read books?")[-1]  # what the panel showed as text
        assert "project" in panel and "dataformer  1" in panel and f"Cache {cache}: 1 response" in panel, panel
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
