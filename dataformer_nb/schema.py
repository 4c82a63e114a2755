"""Structured outputs: the schema a reply must follow, and its validation.

A schema is a Pydantic model class or a JSON Schema dict. Pydantic (and jsonschema, for dicts)
are optional: ``pip install "dataformer_nb[schema]"``; they are imported only when a schema is
used. A reply that does not validate is a failure of its request, retried and never cached.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .errors import ConfigurationError

_NAME = re.compile(r"[^a-zA-Z0-9_-]")


class OutputSchema:
    """The schema of ``schema=``: its JSON Schema (what is sent), and how a reply is validated."""

    def __init__(self, schema: Any) -> None:
        if isinstance(schema, type) and hasattr(schema, "model_json_schema"):  # a Pydantic model class
            self.model: Any = schema
            self.json_schema: dict[str, Any] = schema.model_json_schema()
            name = schema.__name__
        elif isinstance(schema, Mapping):
            self.model = None
            self.json_schema = dict(schema)
            name = str(schema.get("title") or "output")
            self._validator = _json_schema_validator(self.json_schema)
        else:
            raise ConfigurationError(
                f"schema={schema!r} must be a Pydantic model class or a JSON Schema dict such as "
                "{'type': 'object', 'properties': {'answer': {'type': 'string'}}}"
            )
        self.name = _NAME.sub("_", name)[:64] or "output"  # what providers accept as a schema's name

    def parse(self, text: str | None) -> Any:
        """The reply's text as a model instance (or a dict), or ValueError saying why it is not.

        Whatever the validation raises (a model's own validator raising KeyError, a reply nested
        past the recursion limit) is that reply's ValueError: it fails its request, never the run.
        """
        if text is None:
            raise ValueError("the reply holds no text to validate")
        try:
            if self.model is not None:
                return self.model.model_validate_json(text)  # pydantic's ValidationError is a ValueError
            data = json.loads(text)
            errors = sorted(self._validator.iter_errors(data), key=str)
        except ValueError:
            raise
        except Exception as exc:  # a user's validator may raise anything
            raise ValueError(f"validating it raised {type(exc).__name__}: {exc}") from exc
        if errors:
            where = "/".join(map(str, errors[0].absolute_path)) or "the reply"
            raise ValueError(f"{where}: {errors[0].message}")
        return data


def _json_schema_validator(schema: dict[str, Any]) -> Any:
    try:
        import jsonschema
    except ImportError:
        raise ConfigurationError(
            'a JSON Schema dict needs jsonschema to validate replies: pip install "dataformer_nb[schema]" '
            "(or pass a Pydantic model class)"
        ) from None
    validator = jsonschema.validators.validator_for(schema)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigurationError(f"schema= is not a valid JSON Schema: {exc.message}") from None
    except RecursionError:
        raise ConfigurationError("schema= is nested too deeply to be checked") from None
    # No schema ever causes a network request: an empty registry retrieves nothing (jsonschema's
    # default still fetches a remote $ref, with a DeprecationWarning), and every $ref must resolve
    # within the schema before anything is sent.
    import referencing

    checked = validator(schema, registry=referencing.Registry())
    for ref in _refs(schema):
        try:
            checked.evolve(schema={"$ref": ref}).is_valid(None)
        except RecursionError:
            raise ConfigurationError(f"schema= refers to itself without end ($ref {ref!r}): no reply could be "
                                     "validated against it; give the reference something to stop at") from None
        except Exception as exc:  # jsonschema's resolution errors have no public base
            raise ConfigurationError(f"schema= has a $ref {ref!r} that does not resolve within the schema "
                                     f"({type(exc).__name__}): a schema may only refer to its own parts "
                                     "(#/$defs/...), never to a URL") from None
    try:
        checked.is_valid({})  # a reference that loops on itself whatever the reply
    except RecursionError:
        raise ConfigurationError("schema= refers to itself without end: no reply could be validated") from None
    return checked


def _refs(schema: Any, depth: int = 0) -> list[str]:
    """Every ``$ref`` in ``schema`` (nested at most 200 deep; check_schema has refused deeper)."""
    if depth > 200:
        return []
    if isinstance(schema, Mapping):
        own = [schema["$ref"]] if isinstance(schema.get("$ref"), str) else []
        return own + [r for value in schema.values() for r in _refs(value, depth + 1)]
    if isinstance(schema, list):
        return [r for value in schema for r in _refs(value, depth + 1)]
    return []
