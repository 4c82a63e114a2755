"""Prompts over tables from Python and from the magic, and results as tables (issue 28):
pandas, polars and Hugging Face Datasets in, ``to_dataset`` / ``to_polars`` out."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd
import pytest

from dataformer_nb import ConfigurationError
from dataformer_nb.testing import FakeLLMServer

datasets = pytest.importorskip("datasets")
pl = pytest.importorskip("polars")

CITIES = {"city": ["Paris", "Lima", "Oslo"], "country": ["France", "Peru", "Norway"]}


def tables() -> list[Any]:
    return [pd.DataFrame(CITIES), pl.DataFrame(CITIES), datasets.Dataset.from_dict(CITIES)]


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def column(table: Any, name: str) -> list[Any]:
    values = table[name]
    return list(values.to_list() if hasattr(values, "to_list") else values)


@pytest.mark.parametrize("kind", ["pandas", "polars", "dataset"])
def test_generate_over_a_table_writes_the_answers_into_a_copy_failures_missing_and_said_why(
        make_llm, server: FakeLLMServer, kind: str) -> None:
    table = tables()[["pandas", "polars", "dataset"].index(kind)]
    server.script("Capital of Peru?", *["400"] * 5)
    filled = make_llm().generate_over(table, "Capital of {country}?", into="answer")
    assert type(filled) is type(table) and filled is not table
    assert "answer" not in (table.column_names if kind == "dataset" else table.columns)  # the input is untouched
    answers = column(filled, "answer")
    assert answers[0] == "Answer: Capital of France?" and answers[2] == "Answer: Capital of Norway?"
    assert missing(answers[1])
    errors = column(filled, "answer_error")
    assert missing(errors[0]) and "HTTP 400" in errors[1]


def test_generate_over_returns_results_for_any_iterable_and_fills_item_and_columns(make_llm, server) -> None:
    llm = make_llm()
    assert llm.generate_over(["rain", "snow"], "Describe {item}").texts == ["Answer: Describe rain",
                                                                         "Answer: Describe snow"]
    rows = llm.generate_over(pl.DataFrame(CITIES), "{item} in {country}", column="city", system="Be brief.")
    assert rows.texts[0] == "Answer: Paris in France"
    assert rows[0].request["messages"][0] == {"role": "system", "content": "Be brief."}


def test_generate_over_refuses_what_it_cannot_do_before_sending_anything(make_llm, server) -> None:
    llm = make_llm()
    with pytest.raises(ConfigurationError, match=r"into='answer' needs data that is a table .* not a list"):
        llm.generate_over(["a"], "{item}", into="answer")
    with pytest.raises(ConfigurationError, match=r"no column 'town'; its columns: city, country"):
        llm.generate_over(pd.DataFrame(CITIES), "{item}", column="town")
    with pytest.raises(ConfigurationError, match=r"\{population\} in the prompt is not defined in the row's fields"):
        llm.generate_over(datasets.Dataset.from_dict(CITIES), "{population}")
    with pytest.raises(ConfigurationError, match="cannot be changed in place"):
        llm.generate_over(pl.DataFrame(CITIES), "{city}", into="answer", inplace=True)
    with pytest.raises(ConfigurationError, match="no rows"):
        llm.generate_over(iter([]), "{item}")
    with pytest.raises(ConfigurationError, match="not a list, DataFrame"):
        llm.generate_over("a string", "{item}")
    assert server.count == 0  # each refused before anything was sent


def test_pandas_in_place_changes_the_dataframe_itself(make_llm, server) -> None:
    frame = pd.DataFrame(CITIES)
    assert make_llm().generate_over(frame, "About {city}", into="answer", inplace=True) is frame
    assert list(frame["answer"]) == ["Answer: About Paris", "Answer: About Lima", "Answer: About Oslo"]


@pytest.mark.parametrize("kind", ["polars", "dataset"])
def test_the_magic_takes_polars_and_datasets_and_writes_back_the_same_as_python(ip, server, kind: str) -> None:
    table = tables()[["pandas", "polars", "dataset"].index(kind)]
    ip.user_ns["cities"] = table
    filled = ip.run_cell_magic("generate", "--over cities --into answer -o filled", "About {city}")
    assert column(filled, "answer") == ["Answer: About Paris", "Answer: About Lima", "Answer: About Oslo"]
    before = server.count
    ip.run_cell_magic("generate", "--over cities.city --into answer2", "About {item}")
    assert server.count == before  # the same prompts from the column as {item}: all cached


def test_results_as_a_dataset_and_as_polars_carry_text_usage_errors_and_parsed_fields(make_llm, server) -> None:
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int

    server.script("bad", *["400"] * 5)
    llm = make_llm()
    plain = llm.generate([{"messages": [{"role": "user", "content": "good"}], "metadata": {"row": 1}},
                          {"messages": [{"role": "user", "content": "bad"}]}])
    data = plain.to_dataset()
    assert isinstance(data, datasets.Dataset) and len(data) == 2
    assert data.column_names[:7] == ["prompt", "text", "cached", "error", "cause", "prompt_tokens",
                                     "completion_tokens"]
    assert data[0]["text"] == "Answer: good" and data[0]["prompt_tokens"] > 0 and data[1]["text"] is None
    assert data[1]["cause"] == "http 400" and json.loads(data[0]["metadata"]) == {"row": 1}
    frame = plain.to_polars()
    assert frame["text"].to_list() == ["Answer: good", None] and frame["prompt"].to_list() == ["good", "bad"]
    server.reply_with_prompt = True  # the reply is the prompt: the JSON the test wants back
    wanted = json.dumps({"name": "Paris", "population": 2_100_000})
    parsed = llm.generate([{"messages": [{"role": "user", "content": wanted}]}], schema=City).to_dataset()
    assert parsed[0]["name"] == "Paris" and parsed[0]["population"] == 2_100_000
