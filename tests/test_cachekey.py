"""The cache key is the contract with every cache written since 0.1.0: pinned to the byte."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from dataformer_nb import AsyncLLM
from dataformer_nb.cachekey import cache_key

# Computed by release 0.1.0 (commit 1320410) with AsyncLLM(...).cache_key(request, cache_vars).
PINNED_0_1_0: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None, str]] = {
    "chat": ({"api_provider": "echo"},
             {"messages": [{"role": "user", "content": "Why should people read books?"}]}, None,
             "e65112b77b6f9b9b4ba81b95cdfb10073effb86dee35faf84a4ef6112b67d32c"),
    "text": ({"api_provider": "echo", "gen_type": "text"}, {"prompt": "Once upon a time"}, None,
             "1a2f65e261d21b4cf89a45971aba100539cd4f249be8f06552de92349e44bee6"),
    "cache_vars": ({"api_provider": "echo"}, {"messages": [{"role": "user", "content": "hi"}]},
                   {"run": 2, "tag": "b"}, "2f646bb5454bed92c1a1ef7a137eb4b44609b8cd4486f6297d8099c106f8dd9e"),
    "unicode_and_floats": ({"api_provider": "echo"},
                           {"messages": [{"role": "user", "content": "Grüße, 世界 \u2028 \"q\""}],
                            "temperature": 0.7, "top_p": 1.0, "max_tokens": 50.0}, None,
                           "6fa9c370a003763ea3be3321c098a92d14b5bc652d5f5dff406cac00d23f0059"),
    "url_and_model": ({"api_provider": "openai", "url": "http://localhost:8000/v1", "model": "llama-3"},
                      {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
                       "seed": 7}, None, "7f067c72d98f9ea61f1aa8593b3ae5db76bea20b9b05da1f3a7594e3c6d54331"),
    "anthropic": ({"api_provider": "anthropic", "api_key": "x"},
                  {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}], "stop": "END"},
                  None, "83ec2a3b118b3e4b452f872741a9daeaf91e2be8363a2f45603b2e3a5040b94c"),
}


@pytest.mark.parametrize("case", sorted(PINNED_0_1_0))
def test_keys_written_by_0_1_0_are_unchanged(case: str, tmp_path: Path) -> None:
    options, request, cache_vars, expected = PINNED_0_1_0[case]
    llm = AsyncLLM(**options, cache_dir=tmp_path)
    assert llm.cache_key(request, cache_vars) == expected


def test_the_key_is_the_sha256_of_the_documented_json() -> None:
    body = {"messages": [{"role": "user", "content": "Grüße \U0001f600"}], "temperature": 0.25, "n": 2.0,
            "model": "m"}
    document = {"body": {**body, "n": 2}, "cache_vars": {"x": [1, 2]}, "model": "m", "url": "http://h/v1/x",
                "v": 1}
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    expected = hashlib.sha256(text.encode()).hexdigest()
    assert cache_key(body, url="http://h/v1/x", model="m", cache_vars={"x": [1.0, 2]}) == expected


def test_a_repeated_sample_has_its_own_key_and_the_first_keeps_the_0_1_0_key() -> None:
    body = {"messages": [{"role": "user", "content": "Why should people read books?"}], "model": "echo"}
    url = "http://echo.dataformer.invalid/v1/chat/completions"
    first = cache_key(body, url=url, model="echo")
    assert first == PINNED_0_1_0["chat"][3]
    assert cache_key(body, url=url, model="echo", sample=0) == first
    document = {"body": body, "cache_vars": {}, "model": "echo", "sample": 3, "url": url, "v": 1}
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert cache_key(body, url=url, model="echo", sample=3) == hashlib.sha256(text.encode()).hexdigest()
    assert len({cache_key(body, url=url, model="echo", sample=k) for k in range(5)}) == 5
