"""The results of one ``generate`` call: a slot a request, filled in any order, read in request order."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._usage import usage_tokens
from .errors import BatchPending, RequestFailedError
from .results import GenerationResult, GenerationSummary, Results, cost_of, prompt_of

if TYPE_CHECKING:
    from .prepare import Unit


class Slots:
    """The results of one ``generate`` call, one slot a request, in request order, and its summary
    (online and batch mode fill the same slots)."""

    def __init__(self, request_list: Sequence[Mapping[str, Any]], project: str,
                 prices: Mapping[str, tuple[float, float]] | None = None) -> None:
        self._requests = request_list
        self._results: list[GenerationResult | None] = [None] * len(request_list)
        self.summary = GenerationSummary(project)
        self._prices = prices or {}
        self._unpriced = False  # a model without a price was used: no cost is shown

    def cached(self, hits: Mapping[str, bytes], units: Mapping[str, Unit],
               parsed: Mapping[str, Any] | None = None) -> None:
        """Fill the slot of every unit found in the cache (``hits``: key -> response; ``parsed``:
        key -> its validated output, with a schema)."""
        results, requests = self._results, self._requests
        for key, response in hits.items():  # inline: this runs for every slot of a warm re-run
            i = units[key].index
            request = requests[i]
            results[i] = GenerationResult(request, response, True, None, request.get("metadata"),
                                          None if parsed is None else parsed[key])
        self.summary.cached += len(hits)

    def fresh(self, unit: Unit, response: dict[str, Any] | bytes, usage: Any, parsed: Any = None) -> float | None:
        """Fill the slot of ``unit`` with a response received; what it cost, if its model has a price."""
        self._results[unit.index] = self._result(unit.index, response, parsed=parsed)
        self.summary.sent += 1
        return self._paid(unit.route.model, usage)

    def _paid(self, model: str | None, usage: Any) -> float | None:
        """Count a reply's tokens (``usage``) in the summary, and its cost at ``model``'s price;
        the cost, if the model has a price (a model without one: the run shows no cost)."""
        summary = self.summary
        prompt, completion = usage_tokens(usage)
        summary.prompt_tokens += prompt
        summary.completion_tokens += completion
        cost = cost_of(self._prices.get(model), prompt, completion) if model is not None else None
        self._unpriced = self._unpriced or cost is None
        summary.cost = None if self._unpriced else (summary.cost or 0.0) + cost  # type: ignore[operator]
        return cost

    def not_sent(self, error: RequestFailedError) -> None:
        """Fail every slot that has no result yet (the call stopped before sending it)."""
        for i, result in enumerate(self._results):
            if result is None:
                self._results[i] = self._result(i, None, error=error)
                self.summary.failures[error.cause] += 1

    def failed(self, unit: Unit, error: RequestFailedError) -> None:
        """Fill the slot of ``unit`` with its failure."""
        self._results[unit.index] = self._result(unit.index, None, error=error)
        self.summary.failures[error.cause] += 1

    def pending(self, unit: Unit, error: BatchPending) -> None:
        """Fill the slot of ``unit``, which waits in a provider batch (``error`` says which)."""
        self._results[unit.index] = self._result(unit.index, None, error=error)
        self.summary.pending += 1

    # What went over the wire, for the summary: every count is kept here.

    def attempted(self, first: bool, count: int = 1) -> None:
        """``count`` requests went over the wire (``first``: for the first time, not a retry)."""
        summary = self.summary
        summary.attempts += count
        if first:
            summary.requests_sent += count

    def invalid_reply(self, model: str | None = None, usage: Any = None) -> None:
        """A reply came that did not follow the schema asked for; its tokens (``usage``, at
        ``model``'s price) were paid for, so they count in the run's tokens and cost."""
        self.summary.invalid_replies += 1
        if usage is not None:
            self._paid(model, usage)

    def submitted(self, batch_ids: Sequence[str]) -> None:
        """The provider batches that hold this call's requests."""
        self.summary.batches = tuple(batch_ids)

    def saved(self, tokens: int) -> None:
        """The tokens the cache served this call."""
        self.summary.saved_tokens = tokens

    def limits_seen(self, description: str) -> None:
        """What the servers said (or 429s taught) of their limits."""
        self.summary.server_limits = description

    @property
    def size(self) -> int:
        """How many slots (requests) the call has."""
        return len(self._results)

    def results(self, batches: Sequence[Any] | None = None) -> Results:
        """The results, in request order (``batches``: the provider batches that hold them)."""
        return Results(self._results, self.summary, batches)  # type: ignore[arg-type]

    def _result(self, i: int, response: dict[str, Any] | bytes | None, *, cached: bool = False,
                error: RequestFailedError | None = None, parsed: Any = None) -> GenerationResult:
        request = self._requests[i]
        return GenerationResult(request, response, cached, error, request.get("metadata"), parsed)


def prompt_text(request: Mapping[str, Any]) -> str:
    """The prompt kept with a response, for browsing the cache."""
    prompt = prompt_of(request)
    return prompt if isinstance(prompt, str) else "" if prompt is None else json.dumps(prompt, ensure_ascii=False)
