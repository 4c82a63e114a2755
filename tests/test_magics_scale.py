"""%%generate at dataset scale (issue 19): bounded output, answers written back into DataFrames,
any iterable or a JSONL/CSV file as the rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from traitlets import TraitError

from dataformer_nb.magics import Dataformer


def run(ip: InteractiveShell, line: str, body: str):
    return ip.run_cell_magic("generate", line, body)


def shown(ip: InteractiveShell, line: str, body: str) -> tuple[str, int]:
    """What the cell displays (text/plain) and the bytes of all its display data."""
    with capture_output() as captured:
        result = ip.run_cell(f"%%generate {line}\n{body}")
    assert result.success, result.error_in_exec
    data = [output.data for output in captured.outputs]
    size = sum(len(json.dumps(value) if not isinstance(value, str) else value.encode())
               for bundle in data for value in bundle.values())
    return "\n".join(bundle.get("text/plain", "") for bundle in data), size


def test_a_10000_row_batch_shows_its_head_and_tail_in_under_50_kb(ip) -> None:
    ip.user_ns["topics"] = [f"topic {i}" for i in range(10_000)]
    text, size = shown(ip, "echo --over topics -o out", "Tell me about {item}.")
    assert size < 50_000
    assert "Echo: Tell me about topic 0." in text and "Echo: Tell me about topic 9999." in text
    assert "Echo: Tell me about topic 9." in text and "Echo: Tell me about topic 10." not in text
    assert "… 9,980 more …" in text and "all 10,000 results are in out" in text
    assert len(ip.user_ns["out"]) == 10_000  # the whole list is kept


def test_max_rows_is_configurable_and_json_output_is_bounded_too(ip) -> None:
    ip.run_line_magic("config", "Dataformer.max_rows = 6")
    ip.user_ns["topics"] = [f"t{i}" for i in range(100)]
    text, _ = shown(ip, "echo --over topics", "{item}")
    assert "… 94 more …" in text and "all 100 results are in _" in text
    text, size = shown(ip, "echo --over topics -f json", "{item}")
    assert '"more": 94' in text and size < 10_000
    with pytest.raises(TraitError, match="at least 2 rows"):
        Dataformer(shell=None).max_rows = 1


def test_into_writes_answers_into_a_copy_with_nan_and_an_error_column(ip, server) -> None:
    cities = pd.DataFrame({"city": ["Paris", "Lima", "Oslo"], "country": ["France", "Peru", "Norway"]})
    ip.user_ns["cities"] = cities
    server.script("Capital of Peru?", *["400"] * 5)
    frame = run(ip, "--over cities --into answer -o filled", "Capital of {country}?")
    assert frame is ip.user_ns["filled"] and frame is not cities
    assert list(cities.columns) == ["city", "country"]  # the input is never modified
    assert frame["answer"][0] == "Answer: Capital of France?" and math.isnan(frame["answer"][1])
    assert frame["answer_error"][1] is not None and "HTTP 400" in frame["answer_error"][1]
    assert pd.isna(frame["answer_error"][0])


def test_inplace_writes_into_the_dataframe_itself(ip) -> None:
    cities = pd.DataFrame({"city": ["Paris", "Lima"]})
    ip.user_ns["cities"] = cities
    frame = run(ip, "--over cities --into answer --inplace", "About {city}")
    assert frame is cities and list(cities["answer"]) == ["Answer: About Paris", "Answer: About Lima"]
    assert "answer_error" not in cities.columns


def test_over_a_column_uses_it_as_item(ip, server) -> None:
    ip.user_ns["df"] = pd.DataFrame({"city": ["Paris", "Lima"], "n": [1, 2]})
    frame = run(ip, "--over df.city --into answer", "Describe {item} (row {n})")
    assert list(frame["answer"]) == ["Answer: Describe Paris (row 1)", "Answer: Describe Lima (row 2)"]
    with pytest.raises(UsageError, match="no column 'town'; its columns: city, n"):
        run(ip, "--over df.town", "{item}")


def test_over_a_generator_and_a_range(ip, server) -> None:
    ip.run_cell("words = (w for w in ['alpha', 'beta'])\nnumbers = range(3)")
    assert run(ip, "--over words", "Say {item}").texts == ["Answer: Say alpha", "Answer: Say beta"]
    with pytest.raises(UsageError, match="used up after one run"):
        run(ip, "--over words", "Say {item}")
    assert run(ip, "--over numbers", "Count {item}").texts == [f"Answer: Count {i}" for i in range(3)]
    with pytest.raises(UsageError, match="--into needs --over DATAFRAME"):
        run(ip, "--over numbers --into answer", "{item}")


def test_over_file_reads_jsonl_and_csv_rows(ip, tmp_path: Path) -> None:
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"topic": "rain", "style": "short"}\n\n"plain text"\n', encoding="utf-8")
    assert run(ip, f"--over-file {jsonl}", "{item}").texts == [
        "Answer: {'topic': 'rain', 'style': 'short'}", "Answer: plain text"]
    csv = tmp_path / "rows.csv"
    csv.write_text("topic,style\nsnow,long\nfog,brief\n", encoding="utf-8")
    assert run(ip, f"--over-file {csv}", "{topic}, {style}").texts == ["Answer: snow, long", "Answer: fog, brief"]
    (tmp_path / "bad.jsonl").write_text('{"ok": 1}\n{oops\n', encoding="utf-8")
    with pytest.raises(UsageError, match="line 2 is not JSON"):
        run(ip, f"--over-file {tmp_path / 'bad.jsonl'}", "{item}")


def test_the_progress_bar_names_the_dataframe_and_column(ip, capsys) -> None:
    ip.run_line_magic("config", "Dataformer.progress = True")
    ip.user_ns["cities"] = pd.DataFrame({"city": ["Paris"]})
    run(ip, "--over cities --into answer", "About {city}")
    err = capsys.readouterr().err
    assert "cities → answer" in err and "--over" not in err  # the bar names the data, not the option
