"""Settings resolve one way everywhere: argument > environment > .env file > default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from traitlets import TraitError

from dataformer_nb import AsyncLLM, CachePanel
from dataformer_nb.magics import Dataformer
from dataformer_nb.prepare import Preparer, Target
from dataformer_nb.settings import Secret
from dataformer_nb.testing import FakeLLMServer

from .conftest import TOGETHER_KEY, chat

DOTENV_KEY = "sk-from-dotenv-7c1d"


@pytest.fixture
def notebook_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A notebook folder two levels under the project's .env, as the working directory."""
    (tmp_path / ".env").write_text(
        f"TOGETHER_API_KEY={DOTENV_KEY}\nPROJECT_NAME=FromDotenv\nDATAFORMER_CACHE_DIR={tmp_path / 'dotenv-cache'}\n"
        "DATAFORMER_PROVIDER=echo\nDATAFORMER_MODEL=tiny\n"
    )
    folder = tmp_path / "notebooks" / "week1"
    folder.mkdir(parents=True)
    monkeypatch.chdir(folder)
    return tmp_path


def test_keys_project_and_cache_dir_come_from_a_dotenv_file_above(server: FakeLLMServer, notebook_dir,
                                                                   monkeypatch) -> None:
    monkeypatch.delenv("TOGETHER_API_KEY")
    llm = AsyncLLM(api_provider="together", progress=False, verbose=False)
    assert llm.project_name == "fromdotenv"
    assert llm.cache_dir == str(notebook_dir / "dotenv-cache")
    assert llm.generate([chat("hi")])[0].text == "Answer: hi"
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {DOTENV_KEY}"
    assert "TOGETHER_API_KEY" not in os.environ and "PROJECT_NAME" not in os.environ


def test_the_environment_wins_over_the_dotenv_file_and_arguments_over_both(server, notebook_dir,
                                                                           monkeypatch) -> None:
    monkeypatch.setenv("PROJECT_NAME", "from-env")
    llm = AsyncLLM(api_provider="together", progress=False, verbose=False)
    assert llm.project_name == "from-env"
    llm.generate([chat("hi")])
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {TOGETHER_KEY}"  # the server fixture's env
    assert AsyncLLM(project_name="Arg", cache_dir="here").project_name == "arg"


def test_an_edited_dotenv_file_is_read_again(notebook_dir: Path) -> None:
    assert AsyncLLM().project_name == "fromdotenv"
    dotenv = notebook_dir / ".env"
    dotenv.write_text(dotenv.read_text().replace("FromDotenv", "Edited"))
    os.utime(dotenv, ns=(1, 1))  # a new modification time, even within the clock's resolution
    assert AsyncLLM().project_name == "edited"


def test_magics_and_the_panel_read_the_same_settings(notebook_dir: Path) -> None:
    magics = Dataformer(shell=None)
    assert (magics.provider, magics.model, magics.project) == ("echo", "tiny", "FromDotenv")
    assert magics.cache_dir == str(notebook_dir / "dotenv-cache")
    panel = CachePanel()
    assert panel._cache_dir == str(notebook_dir / "dotenv-cache")
    panel.close()


def test_defaults_without_any_setting(tmp_path: Path) -> None:
    llm = AsyncLLM()
    assert (llm.api_provider, llm.project_name, llm.cache_dir) == ("openai", "dataformer", ".cache/dataformer")
    magics = Dataformer(shell=None)
    assert (magics.provider, magics.project, magics.cache_dir) == ("openai", "dataformer", ".cache/dataformer")


def test_the_format_trait_accepts_only_known_formats() -> None:
    magics = Dataformer(shell=None)
    magics.format = "json"
    with pytest.raises(TraitError):
        magics.format = "xml"


def test_secrets_show_as_stars_in_reprs(tmp_path: Path) -> None:
    secret = Secret("sk-very-secret")
    assert repr(secret) == str(secret) == "***" and secret.reveal() == "sk-very-secret"
    llm = AsyncLLM(api_provider="together", api_key="sk-very-secret", cache_dir=tmp_path)
    route = Preparer(Target("together", None, Secret("sk-very-secret"), None), "chat", {}, llm._limiter,
                     None).prepare(0, chat("x")).route
    assert "sk-very-secret" not in repr(route) + repr(llm) + repr(vars(llm))
