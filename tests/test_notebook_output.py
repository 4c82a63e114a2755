"""What a user sees (issue 15, part): one-line warnings, typo suggestions, the usage line,
failures in tables, the server's name, a red bar for a run that got nothing, panel numbers."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from jupyter_client.manager import start_new_kernel

from dataformer_nb import CachePanel, InvalidRequestError, ResponseCache
from dataformer_nb._format import wrapping_line
from dataformer_nb.magics import Dataformer
from dataformer_nb.testing import FakeLLMServer

from .conftest import chat


def test_a_warning_in_a_notebook_is_one_line_without_source(tmp_path: Path) -> None:
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        code = (f"%load_ext dataformer_nb\n%config Dataformer.cache_dir = {str(tmp_path)!r}\n"
                "%dataformer clear nosuchproject")
        errors: list[str] = []
        kc.execute_interactive(code, timeout=60, output_hook=lambda msg: errors.append(msg["content"]["text"])
                               if msg["msg_type"] == "stream" and msg["content"]["name"] == "stderr" else None)
        shown = "".join(errors)
        assert shown.startswith("UnknownProjectWarning: clear_project_cache: no project named 'nosuchproject'")
        assert "magics.py" not in shown and "getattr" not in shown and shown.count("\n") == 1
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_mistyped_option_gets_a_suggestion(ip) -> None:
    with pytest.raises(UsageError, match=r"--temprature: did you mean --temperature\?"):
        ip.run_cell_magic("generate", "--temprature 0.3", "x")


def test_the_usage_line_names_the_cell_magic() -> None:
    assert "%%generate [" in Dataformer.generate.__doc__ and "\n  %generate [" not in Dataformer.generate.__doc__


def test_a_failed_row_shows_as_text_under_a_status_header(ip, server) -> None:
    ip.user_ns["topics"] = ["good", "bad"]
    server.script("bad", "400")
    with capture_output() as captured:
        ip.run_cell("%%generate --over topics\n{item}")
    bundle = captured.outputs[-1].data
    assert "<th style='text-align:left'>status</th>" in bundle["text/html"]
    assert "failed: together at" in bundle["text/plain"] and "**" not in bundle["text/html"]


def test_a_server_named_by_url_is_called_by_its_host(server, make_llm) -> None:
    other_host = server.url.replace("127.0.0.1", "localhost")
    server.script("bad", "400")
    error = make_llm(url=f"{other_host}/v1").generate([chat("bad")])[0].error
    assert str(error).startswith(f"{other_host.removeprefix('http://')} at {other_host}/v1/chat/completions")


def test_a_run_where_everything_failed_ends_with_a_red_bar(server, make_llm, capsys) -> None:
    server.script("bad", "400")
    make_llm(progress=True).generate([chat("bad")])
    assert "\x1b[31m" in capsys.readouterr().err  # tqdm's red
    make_llm(progress=True).generate([chat("fine")])
    assert "\x1b[31m" not in capsys.readouterr().err


def test_the_panel_header_counts_shared_responses_once_and_follows_deletes(server, make_llm) -> None:
    llm = make_llm()
    llm.generate([chat("a"), chat("b")], project_name="one")
    llm.generate([chat("b"), chat("c")], project_name="two")
    panel = CachePanel(llm)
    cache: ResponseCache = llm.cache
    assert len(cache) == 3 and sum(p.responses for p in cache.projects()) == 4
    assert "3 responses" in panel.header.value and "shared ones counted once" in panel.header.value
    assert "on disk" in panel.header.value
    panel._delete("one")
    assert "2 responses" in panel.header.value and len(cache) == 2
    panel.close()


def test_the_panel_has_a_static_fallback_with_the_same_rows(server, make_llm, ip, cache_dir) -> None:
    llm = make_llm()
    llm.generate([chat("a"), chat("b")], project_name="maths")
    bundle = CachePanel(llm)._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # the live widget, where a kernel is attached
    assert "VBox" not in bundle["text/plain"] and "maths" in bundle["text/plain"] and "2 responses," in bundle[
        "text/plain"]
    assert "<table>" in bundle["text/html"] and "<td style='text-align:left;white-space:pre-wrap'>maths</td>" in bundle[
        "text/html"]
    with capture_output() as captured:  # the terminal shows the table, not a repr
        ip.run_cell("%dataformer cache")
    assert "maths" in captured.stdout and "VBox" not in captured.stdout


def test_json_output_opens_expanded_and_help_is_aligned(ip, capsys) -> None:
    with capture_output() as captured:
        ip.run_cell("%%generate echo -f json\nhi")
    assert captured.outputs[-1].metadata == {"application/json": {"expanded": True}}
    ip.run_line_magic("dataformer", "help")
    lines = capsys.readouterr().out.splitlines()[:6]
    assert len({line.index(line.split("  ")[-1].strip()) for line in lines}) == 1  # one column for the text


def test_an_error_in_a_script_has_no_event_loop_noise(make_llm, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError) as info:
        make_llm().generate([{"messages": "not a list"}])
    assert info.value.__context__ is None  # not "during handling of RuntimeError: no running event loop"


def test_generate_works_in_a_kernel_where_nest_asyncio_was_applied(server: FakeLLMServer, tmp_path: Path) -> None:
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        def run(code: str) -> dict:
            return kc.execute_interactive(code, timeout=60)["content"]

        assert run("import nest_asyncio; nest_asyncio.apply()")["status"] == "ok"  # as some libraries do
        code = (f"from dataformer_nb import AsyncLLM\nllm = AsyncLLM(url={server.url + '/v1'!r}, api_key='k', "
                f"cache_dir={str(tmp_path)!r}, progress=False, verbose=False)\n"
                "r = llm.generate([{'messages': [{'role': 'user', 'content': 'nested'}]}])\n"
                "assert r.texts == ['Answer: nested'], r")
        assert run(code)["status"] == "ok"
        assert run("r2 = llm.generate([{'messages': [{'role': 'user', 'content': 'nested'}]}]); "
                   "assert r2[0].cached")["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_an_interrupt_in_ipython_is_one_line_with_the_counts(ip, server: FakeLLMServer, cache_dir: Path) -> None:
    """The terminal IPython shows what a notebook shows: one line, no traceback of our internals."""
    server.script("q3", "sigint")
    ip.user_ns["reqs"] = [chat(f"q{i}") for i in range(6)]
    ip.run_cell("from dataformer_nb import AsyncLLM\n"
                f"llm = AsyncLLM(api_provider='together', cache_dir={str(cache_dir)!r}, max_concurrent_requests=1, "
                "progress=False, verbose=False)")
    with capture_output() as shown:
        result = ip.run_cell("llm.generate(reqs)")
    server.release()
    text = shown.stdout + shown.stderr
    assert type(result.error_in_exec).__name__ == "GenerationInterrupted"
    assert "KeyboardInterrupt: interrupted: 3 new responses saved (cache, llm.last_results)" in text
    assert "a re-run sends the other 3" in text
    assert "Traceback" not in text and "threading" not in text and "asyncio" not in text


def test_a_batch_says_its_summary_once_in_the_caption_unbroken(ip, capsys) -> None:
    ip.run_line_magic("config", "Dataformer.progress = True")
    try:
        ip.user_ns["topics"] = ["a", "b", "c"]
        with capture_output() as shown:
            ip.run_cell("%%generate echo --over topics -o out\nTell me about {item}.")
    finally:
        ip.run_line_magic("config", "Dataformer.progress = False")
    summary = "3 requests: 3 sent, 0 cached, 0 failed"
    assert summary not in shown.stdout and "cached=0" not in shown.stderr and "failed=0" not in shown.stderr
    bundle, = (o.data for o in shown.outputs)
    assert f"{summary} · project dataformer · tokens " in bundle["text/plain"].splitlines()[-1]
    assert "<span style='white-space:nowrap'>· project dataformer</span>" in bundle["text/html"]
    with capture_output() as single:
        ip.run_cell("%%generate echo\nJust one.")
    assert single.stdout.count("1 request: 1 sent") == 1  # a single prompt: the line says it


def test_a_library_error_shows_as_one_block_in_ipython_and_whole_in_verbose_mode(ip, monkeypatch) -> None:
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    code = "from dataformer_nb import AsyncLLM\nAsyncLLM(api_provider='together').generate([{'messages': " \
           "[{'role': 'user', 'content': 'x'}]}])"
    with capture_output() as shown:
        ip.run_cell(code)
    text = shown.stdout + shown.stderr
    assert "MissingAPIKeyError: TOGETHER_API_KEY is not set" in text
    assert "_sync.py" not in text and "asyncio" not in text and text.count("\n") <= 2
    ip.run_line_magic("xmode", "Verbose")
    try:
        with capture_output() as shown:
            ip.run_cell(code)
    finally:
        ip.run_line_magic("xmode", "Context")
    assert "MissingAPIKeyError" in shown.stdout + shown.stderr and "llms.py" in shown.stdout + shown.stderr


def test_an_interrupted_magic_keeps_what_arrived_in_its_out_variable(ip, server: FakeLLMServer,
                                                                       cache_dir: Path) -> None:
    server.script("n3", "sigint")
    ip.user_ns["nums"] = [f"n{i}" for i in range(6)]
    ip.run_cell("from dataformer_nb import AsyncLLM\n"
                f"llm = AsyncLLM(api_provider='together', cache_dir={str(cache_dir)!r}, max_concurrent_requests=1, "
                "progress=False, verbose=False)")
    with capture_output() as shown:
        ip.run_cell("%%generate --llm llm --over nums -o out\n{item}")
    server.release()
    text = shown.stdout + shown.stderr
    assert "interrupted: 3 new responses saved (cache, out); a re-run sends the other 3" in text
    assert "last_results" not in text
    assert [r.text for r in ip.user_ns["out"]][:3] == ["Answer: n0", "Answer: n1", "Answer: n2"]


def test_generate_and_the_magic_say_the_summary_in_one_form_that_never_leaves_a_dot_dangling(
        ip, cache_dir: Path, capsys) -> None:
    ip.run_cell(f"from dataformer_nb import AsyncLLM\n"
                f"llm = AsyncLLM(api_provider='echo', cache_dir={str(cache_dir)!r}, progress=False)\n"
                "llm.generate([{'messages': [{'role': 'user', 'content': 'a'}]}], project_name='p');")
    printed = capsys.readouterr().out.splitlines()[0]
    with capture_output() as shown:
        ip.run_cell("%%generate --llm llm --project p\nb")  # as new as "a", and as long
    assert printed.startswith("1 request: 1 sent, 0 cached, 0 failed · project p · tokens")  # no prefix of its own
    assert printed in shown.stdout.splitlines()  # the magic's line, word for word
    html = wrapping_line("1 request: 1 sent · project p · tokens 1 / 2")
    # Break opportunities are the spaces between the spans; a "·" always opens the next one.
    assert [part.split(">", 1)[1] for part in html.split("</span> ")[1:]] == ["· project p", "· tokens 1 / 2</span>"]


def test_a_saved_notebook_shows_every_bar_in_its_final_state_and_the_summary_unbroken(tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    code = (f"from dataformer_nb import AsyncLLM\nllm = AsyncLLM(api_provider='echo', cache_dir={str(tmp_path)!r})\n"
            "results = llm.generate([{'messages': [{'role': 'user', 'content': str(i)}]} for i in range(4)])")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    bars = [o["data"]["text/plain"] for o in notebook.cells[0].outputs
            if o.get("data", {}).get("text/plain", "").startswith("generate")]
    assert len(bars) == 1 and "4/4" in bars[0] and "0/4" not in bars[0], bars
    assert "application/vnd.jupyter.widget-view+json" in notebook.cells[0].outputs[0]["data"]  # still the live bar
    # The summary in a notebook: the same words as printed, as HTML that wraps only before a "·".
    summary = notebook.cells[0].outputs[-1]["data"]
    assert summary["text/plain"].startswith("4 requests: 4 sent, 0 cached, 0 failed · project dataformer · tokens")
    assert summary["text/html"] == wrapping_line(summary["text/plain"])


def test_the_one_line_form_of_warnings_holds_within_a_magic_only_and_unload_gives_the_display_back(ip) -> None:
    from dataformer_nb import magics
    from dataformer_nb.errors import UnknownProjectWarning

    installed = warnings.formatwarning
    assert isinstance(installed, magics._OneLineWarningFormat)
    standard = "lib.py:3: UnknownProjectWarning: gone\n"
    assert warnings.formatwarning("gone", UnknownProjectWarning, "lib.py", 3, "") == standard
    elsewhere: list[str] = []
    with magics._one_line_warnings():
        assert warnings.formatwarning("gone", UnknownProjectWarning, "lib.py", 3, "") == "UnknownProjectWarning: gone\n"
        assert warnings.formatwarning("x", UserWarning, "lib.py", 3, "") == "lib.py:3: UserWarning: x\n"
        # another thread (its own context) is not inside the magic: its warnings look as they always do
        thread = threading.Thread(target=lambda: elsewhere.append(
            warnings.formatwarning("gone", UnknownProjectWarning, "lib.py", 3, "")))
        thread.start()
        thread.join()
    assert elsewhere == [standard]
    ip.run_line_magic("unload_ext", "dataformer_nb")
    assert warnings.formatwarning is installed.wrapped
    ip.run_line_magic("load_ext", "dataformer_nb")
    assert isinstance(warnings.formatwarning, magics._OneLineWarningFormat)
    assert warnings.formatwarning.wrapped is installed.wrapped  # loaded twice, wrapped once
