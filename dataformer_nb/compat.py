"""Running dataformer 0.0.2's code on dataformer_nb, unchanged: its components, its examples,
its tests and your notebooks written for it.

    import dataformer_nb.compat
    dataformer_nb.compat.install()      # before importing code that imports dataformer's AsyncLLM

    from dataformer.llms import AsyncLLM             # or: from dataformer.llms.asyncllm import AsyncLLM
    llm = AsyncLLM(api_provider="together")          # dataformer_nb's client, dataformer's return value
    results = llm.generate(request_list)             # [[request, response], ...] plain lists

``install()`` puts ``DataformerAsyncLLM`` under both of dataformer's import paths (its real modules
when dataformer is installed, so its components and utils keep working; modules of their own
when it is not). ``DataformerAsyncLLM`` is dataformer_nb's ``AsyncLLM`` (the cache, projects,
limits, retries, providers) whose ``generate`` returns what dataformer's did: a plain list of
plain lists, ``[request, response]`` plus the request's metadata when it had some, which
``json.dumps``, ``dataformer.utils`` (``get_messages``, ``get_sharegpt``, ``get_alpaca``,
``save_jsonl``) and ``results[i][2]`` take. ``llm.last_results`` keeps the rich results (texts,
errors, the summary).

Why a class of its own rather than making every result a list: dataformer_nb keeps each
response as its JSON bytes until it is read (10^5 decoded responses cost ~200 MB more, past the
memory target), and ``json.dumps`` reads a list's items directly, so a result can be a
``list`` only by holding its decoded response. Code written for dataformer pays that, as it did
with dataformer; code written for dataformer_nb does not. ``results.to_list()`` gives the same
lists from dataformer_nb's own results.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Mapping, Sequence
from typing import Any

from .llms import AsyncLLM

__all__ = ["DataformerAsyncLLM", "install"]


class DataformerAsyncLLM(AsyncLLM):
    """dataformer_nb's ``AsyncLLM`` with dataformer 0.0.2's return value (see the module's docstring)."""

    def generate(  # type: ignore[override]  # dataformer's return value, not Results
        self,
        request_list: Sequence[Mapping[str, Any]],
        cache_vars: Mapping[str, Any] | None = None,
        task_id_generator: Any = None,
        use_cache: bool = True,
        project_name: str | None = None,
        clear_project_cache: str | Sequence[str] | None = None,
        **options: Any,
    ) -> list[list[Any]]:
        """``AsyncLLM.generate``, returning ``[request, response]`` (plus the request's metadata when
        it had some) per request, in request order, as plain lists; a request that failed for good
        has, as in dataformer, the list of its errors' messages as its response."""
        results = super().generate(request_list, cache_vars, task_id_generator, use_cache, project_name,
                                   clear_project_cache, **options)
        return [[r.request, r.response if r.error is None else [str(r.error)]]
                + ([r.metadata] if r.metadata is not None else []) for r in results]


def install() -> type[DataformerAsyncLLM]:
    """Make ``from dataformer.llms import AsyncLLM`` and ``from dataformer.llms.asyncllm import
    AsyncLLM`` give ``DataformerAsyncLLM``, in this process, from now on (code that imported
    dataformer's class before keeps it: call this first). Returns the class."""
    try:
        import dataformer.llms
        import dataformer.llms.asyncllm
    except ImportError:  # dataformer is not installed: its import paths are ours alone
        package, llms, asyncllm = (_module(name) for name in ("dataformer", "dataformer.llms",
                                                               "dataformer.llms.asyncllm"))
        package.llms = llms  # type: ignore[attr-defined]
        llms.asyncllm = asyncllm  # type: ignore[attr-defined]
    else:
        llms, asyncllm = dataformer.llms, dataformer.llms.asyncllm
    llms.AsyncLLM = DataformerAsyncLLM  # type: ignore[attr-defined]
    asyncllm.AsyncLLM = DataformerAsyncLLM  # type: ignore[attr-defined]
    return DataformerAsyncLLM


def _module(name: str) -> types.ModuleType:
    """The module ``name`` in ``sys.modules``, made (as a package, so that its submodules import)
    if there is none."""
    module = sys.modules.get(name)
    if not isinstance(module, types.ModuleType):
        module = sys.modules[name] = types.ModuleType(name)
        module.__path__ = []
    return module
