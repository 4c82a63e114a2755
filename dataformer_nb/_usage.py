"""A reply's ``usage``, read in one place: token counts as whole numbers within reason.

A server may say anything in ``usage``: a count that is not a whole number, is negative, or is
past ``MAX_TOKENS`` (``10**400`` overflowed the cost; ``10**31`` under a TPM limit held
the bucket for decades) counts 0, with a warning, and is never used to price or pace.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from .errors import DataformerWarning

MAX_TOKENS = 10**9  # no reply of any model comes near: a larger count is garbled


def token_count(value: Any, what: str = "a token count") -> int | None:
    """``value`` if it is a plausible token count; None if absent or not one (warned when absurd)."""
    if type(value) is not int or value < 0:
        return None
    if value > MAX_TOKENS:
        warnings.warn(f"a reply's usage says {what} is {str(value)[:20]}{'...' if value > 10**20 else ''}, "
                      f"more than {MAX_TOKENS:,}: ignored (not priced, not counted against limits)",
                      DataformerWarning, stacklevel=2)
        return None
    return value


def usage_tokens(usage: Any) -> tuple[int, int]:
    """The prompt and completion tokens of a reply's ``usage`` (OpenAI's shape); a count that is
    not a plausible whole number counts 0."""
    if not isinstance(usage, Mapping):
        return 0, 0
    return (token_count(usage.get("prompt_tokens"), "prompt_tokens") or 0,
            token_count(usage.get("completion_tokens"), "completion_tokens") or 0)
