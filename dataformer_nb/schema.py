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
        """The reply's text as a model instance (or a dict), or ValueError saying why it is not."""
        if text is None:
            raise ValueError("the reply holds no text to validate")
        if self.model is not None:
            return self.model.model_validate_json(text)  # pydantic's ValidationError is a ValueError
        data = json.loads(text)
        errors = sorted(self._validator.iter_errors(data), key=str)
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
    return validator(schema)
