"""The cache key: the contract between a request and every cache written since 0.1.0.

A response is cached under the SHA-256 (hex) of this JSON text, UTF-8 encoded::

    json.dumps({"body": BODY, "cache_vars": CACHE_VARS, "model": MODEL, "url": URL, "v": 1},
               sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

- ``BODY``: the JSON body as sent to the provider (the model included, routing fields,
  ``api_key`` and ``metadata`` excluded), with every integral float written as an int, so
  ``temperature=1`` and ``temperature=1.0`` share a key;
- ``CACHE_VARS``: the ``cache_vars`` dict of ``generate`` (``{}`` when not given), same rule;
- ``MODEL``: the model name; ``URL``: the endpoint the body is POSTed to;
- ``v``: ``KEY_VERSION``, 1 since 0.1.0.

The k-th repeat (k >= 1) of an identical request in one batch is its own sample: its
document has one more member, ``"sample": k``. The first copy (k = 0) has none, so its key
is the 0.1.0 key. ``tests/test_cachekey.py`` pins the exact keys of a few requests: a
change here that moves any key makes every user's cache miss.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from ._json import dumps_sorted

KEY_VERSION = 1
_PLAIN = frozenset({str, int, bool, type(None)})


def cache_key(body: Mapping[str, Any], *, url: str, model: str, cache_vars: Mapping[str, Any] | None = None,
              sample: int = 0) -> str:
    """The key of ``body`` sent to ``url`` with ``model`` (see the module's documentation)."""
    return KeyMaker(url, model, cache_vars).key(body, sample)


class KeyMaker:
    """Keys for one (url, model, cache_vars): what follows the body is encoded once.

    Raises TypeError or ValueError for a value JSON cannot hold (NaN included).
    """

    def __init__(self, url: str, model: str, cache_vars: Mapping[str, Any] | None = None) -> None:
        # The members after "body", in sorted order; "sample" (when present) sorts between.
        self._before_sample = f',"cache_vars":{dumps_sorted(canonical(cache_vars or {}))},"model":{dumps_sorted(model)}'
        self._after_sample = f',"url":{dumps_sorted(url)},"v":{KEY_VERSION}}}'

    def key(self, body: Mapping[str, Any], sample: int = 0) -> str:
        """The cache key of a request ``body`` as sent (and of its ``sample``-th repeat): the SHA-256
        of the documented JSON text."""
        sample_member = f',"sample":{int(sample)}' if sample else ""
        text = f'{{"body":{dumps_sorted(canonical(body))}{self._before_sample}{sample_member}{self._after_sample}'
        return hashlib.sha256(text.encode()).hexdigest()

    def key_of_own(self, body: dict[str, Any]) -> str:
        """``key`` for a body dict the caller owns, canonicalised in place: one dict
        fewer per request (10^5 requests are keyed on every warm re-run)."""
        for name, value in body.items():
            if type(value) not in _PLAIN:
                body[name] = canonical(value)
        text = f'{{"body":{dumps_sorted(body)}{self._before_sample}{self._after_sample}'
        return hashlib.sha256(text.encode()).hexdigest()


def canonical(value: Any) -> Any:
    """``value`` with integral floats as ints, so 1 and 1.0 give one cache key."""
    kind = type(value)
    if kind is dict:  # the common case first: this runs over every request of every call
        return {k: v if type(v) in _PLAIN else canonical(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [v if type(v) in _PLAIN else canonical(v) for v in value]
    if kind is float:
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        return canonical(dict(value))
    if isinstance(value, (list, tuple)):
        return canonical(list(value))
    return value
