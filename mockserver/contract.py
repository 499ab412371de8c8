"""The contract, ``openapi.yaml``, compiled once into validators per operation.

Every request body, whatever its media type, is decoded into the nested shape of
the operation's ``application/json`` schema and validated against that one
schema (jsonschema-rs). Form bodies arrive as text, so their values are first
coerced to the types that schema names. Query parameters are coerced and checked
against their parameter schemas. Nothing here knows the API's fields by name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from typing import Any
from urllib.parse import quote

import jsonschema_rs
import yaml

from .errors import BadRequest, Unprocessable

JSON = "application/json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
LENIENT_KINDS = frozenset({"AdditionalProperties", "UnevaluatedProperties"})
_INTEGER = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_TRUE = frozenset({"true", "1", "t", "on"})
_FALSE = frozenset({"false", "0", "f", "off"})


SPEC_RESOURCE = resources.files("mockserver").joinpath("openapi.yaml")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def spec_bytes() -> bytes:
    """The spec shipped inside the package (the repository's ``openapi.yaml``)."""
    return SPEC_RESOURCE.read_bytes()


def follow_refs(document: dict[str, Any], node: Any) -> Any:
    """``node`` with its ``$ref`` chain followed inside ``document`` (siblings of a ``$ref``
    are dropped; :meth:`Contract.resolve` keeps them for schemas)."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def load_document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.load(spec_bytes(), Loader=_LOADER)
    return document


@dataclass(frozen=True, slots=True)
class Violation:
    """One way a request broke the contract."""

    field: str
    message: str
    kind: str

    @property
    def lenient(self) -> bool:
        """Unknown fields: the real API ignores them, so the mock serves the request."""
        return self.kind in LENIENT_KINDS


class Operation:
    """One operation of the spec: its body validator and its query parameters."""

    def __init__(self, contract: Contract, path: str, method: str, node: dict[str, Any]) -> None:
        self.contract = contract
        self.path = path
        self.method = method.upper()
        self.operation_id: str = node["operationId"]
        self._node = node
        self._pointer = "/".join(["#/paths", _escape(path), method])
        self._response_validators: dict[str, jsonschema_rs.Validator] = {}

    @cached_property
    def body_schema(self) -> dict[str, Any] | None:
        content = self._node.get("requestBody", {}).get("content", {})
        if JSON not in content:
            return None
        return self.contract.resolve(content[JSON]["schema"])

    @cached_property
    def media_types(self) -> tuple[str, ...]:
        return tuple(self._node.get("requestBody", {}).get("content", {}))

    @cached_property
    def _body_validator(self) -> jsonschema_rs.Validator:
        pointer = f"{self._pointer}/requestBody/content/{_escape(JSON)}/schema"
        return self.contract.compile(pointer)

    @cached_property
    def query_parameters(self) -> dict[str, dict[str, Any]]:
        params: dict[str, dict[str, Any]] = {}
        for raw in self._node.get("parameters", []):
            param = self.contract.resolve(raw)
            if param.get("in") == "query":
                params[param["name"]] = self.contract.resolve(param["schema"])
        return params

    def coerce_form(self, body: dict[str, Any]) -> dict[str, Any]:
        """Form values are text: turn them into the types the JSON schema wants."""
        if self.body_schema is None:
            return body
        coerced: dict[str, Any] = self.contract.coerce(body, self.body_schema)
        return coerced

    def check_response(self, status: int, body: Any) -> list[str]:
        """How a response breaks the contract: an undocumented status, or a body off-schema."""
        responses = self._node.get("responses", {})
        key = str(status) if str(status) in responses else f"{str(status)[0]}XX"
        if key not in responses:
            key = "default"
        if key not in responses:
            return [f"status {status} is not documented for {self.operation_id}"]
        content = self.contract.resolve(responses[key]).get("content", {})
        if JSON not in content:
            return [] if body is None else [f"{self.operation_id} {status} documents no JSON body"]
        validator = self._response_validators.get(key)
        if validator is None:
            pointer = f"{self._pointer}/responses/{key}"
            if "$ref" in responses[key]:
                pointer = responses[key]["$ref"]
            validator = self.contract.compile(f"{pointer}/content/{_escape(JSON)}/schema")
            self._response_validators[key] = validator
        return [
            f"{'/'.join(map(str, e.instance_path)) or '(body)'}: {e.message}"
            for e in validator.iter_errors(body)
        ]

    def check_body(self, instance: Any) -> list[Violation]:
        """All contract violations of a decoded body (files stand in as strings)."""
        try:
            if self._body_validator.is_valid(instance):  # a third of collecting no errors
                return []
            errors = list(self._body_validator.iter_errors(instance))
        except UnicodeEncodeError:
            raise BadRequest(
                "malformed body: a string holds an unpaired UTF-16 surrogate"
            ) from None
        found: list[Violation] = []
        for error in errors:
            kind = error.kind
            if isinstance(kind, Kind.AdditionalProperties | Kind.UnevaluatedProperties):
                found.extend(self._unknown_fields(error, kind.unexpected))
            else:
                found.append(_violation(error))
        return found

    def _unknown_fields(
        self, error: jsonschema_rs.ValidationError, names: list[str]
    ) -> list[Violation]:
        """Fields the schema does not know. An object that failed another keyword leaves its
        known fields "unevaluated" too (JSON Schema drops the failed branch's annotations),
        so each name is checked against the properties the schema declares there."""
        path = list(error.instance_path)
        known = self.contract.known_properties(self.body_schema or {}, path)
        kind = type(error.kind).__name__
        return [
            Violation(_field_name([*path, name]), "is not a known field", kind)
            for name in names
            if name not in known
        ]

    @cached_property
    def _query_validators(self) -> dict[str, jsonschema_rs.Validator]:
        return {name: jsonschema_rs.validator_for(s) for name, s in self.query_parameters.items()}

    def parse_query(self, query: Mapping[str, str]) -> tuple[dict[str, Any], list[Violation]]:
        """Coerced query parameters, defaults filled in, and how they break the contract."""
        values: dict[str, Any] = {}
        violations: list[Violation] = []
        for name, schema in self.query_parameters.items():
            if name not in query:
                if "default" in schema:
                    values[name] = schema["default"]
                continue
            value = self.contract.coerce(query[name], schema)
            for error in self._query_validators[name].iter_errors(value):
                message = _rails_message(error)
                if name == "offset":
                    message += "; page deeper with before_id instead"
                violations.append(Violation(name, message, type(error.kind).__name__))
            values[name] = value
        return values, violations


class Contract:
    """The whole spec: operations by id, ``$ref`` resolution, coercion, compiled validators."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.operations: dict[str, Operation] = {}
        for path, item in document.get("paths", {}).items():
            for method, node in item.items():
                if isinstance(node, dict) and "operationId" in node:
                    op = Operation(self, path, method, node)
                    self.operations[op.operation_id] = op

    def match(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        """The operation serving ``METHOD /path``, and the path's parameters."""
        for pattern, operation in self._patterns:
            found = pattern.match(path)
            if found and operation.method == method.upper():
                return operation, found.groupdict()
        return None

    @cached_property
    def _patterns(self) -> list[tuple[re.Pattern[str], Operation]]:
        patterns = []
        for operation in self.operations.values():
            parts = re.split(r"\{(\w+)\}", operation.path)
            regex = "".join(
                re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+?)"
                for i, part in enumerate(parts)
            )
            patterns.append((re.compile(f"^{regex}$"), operation))
        # Literal suffixes first: /tunes/1.json is getTuneJson, not getTune with id "1.json".
        patterns.sort(key=lambda item: -len(item[1].path))
        return patterns

    @classmethod
    def load(cls) -> Contract:
        return cls(load_document())

    def compile(self, pointer: str) -> jsonschema_rs.Validator:
        root = {**self.document, "$schema": DIALECT, "$ref": pointer}
        return jsonschema_rs.Draft202012Validator(root, validate_formats=True)

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        """Follow ``$ref`` chains inside the document."""
        seen = 0
        while "$ref" in node:
            target: Any = self.document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            seen += 1
            if seen > 32:
                raise ValueError(f"$ref loop at {node}")
        return node

    def _branches(self, schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The schema and every schema it composes with (allOf/anyOf/oneOf)."""
        schema = self.resolve(schema)
        yield schema
        for keyword in ("allOf", "anyOf", "oneOf"):
            for sub in schema.get(keyword, []):
                yield from self._branches(sub)

    def _types(self, schema: dict[str, Any]) -> set[str]:
        types: set[str] = set()
        for branch in self._branches(schema):
            kind = branch.get("type")
            if isinstance(kind, str):
                types.add(kind)
            elif isinstance(kind, list):
                types.update(kind)
            if branch.get("const", 0) is None or None in branch.get("enum", [0]):
                types.add("null")
        return types

    def known_properties(self, schema: dict[str, Any], path: list[str | int]) -> set[str]:
        """The property names the schema declares for the object at ``path`` of an instance."""
        for step in path:
            if isinstance(step, int):
                schema = self._items(schema) or {}
            else:
                schema = self._properties(schema).get(step, {})
        return set(self._properties(schema))

    def _properties(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Every property an object schema declares, across allOf/anyOf/oneOf."""
        properties: dict[str, Any] = {}
        for branch in self._branches(schema):
            properties.update(branch.get("properties", {}))
        return properties

    def _items(self, schema: dict[str, Any]) -> dict[str, Any] | None:
        items = [b["items"] for b in self._branches(schema) if isinstance(b.get("items"), dict)]
        return items[0] if items else None

    def coerce(self, value: Any, schema: dict[str, Any]) -> Any:
        """Text from a form or a query string, converted where the schema asks for another type."""
        if isinstance(value, str):
            return _coerce_text(value, self._types(schema))
        if isinstance(value, dict):
            properties = self._properties(schema)
            return {
                key: self.coerce(item, properties[key]) if key in properties else item
                for key, item in value.items()
            }
        if isinstance(value, list):
            items = self._items(schema)
            return value if items is None else [self.coerce(item, items) for item in value]
        return value


def _coerce_text(text: str, types: set[str]) -> Any:
    if text == "" and "null" in types:
        return None
    if "string" in types or not types:
        return text
    if "integer" in types and _INTEGER.match(text):
        return int(text)
    if "number" in types and _NUMBER.match(text):
        number = float(text)
        return int(number) if number.is_integer() and _INTEGER.match(text) else number
    if "boolean" in types:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    if "object" in types or "array" in types:
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def violations_to_error(violations: list[Violation], strict: bool = False) -> Unprocessable | None:
    """The 422 for the violations, or None when only lenient ones remain (and not ``strict``)."""
    fields: dict[str, list[str]] = {}
    for violation in violations:
        if strict or not violation.lenient:
            messages = fields.setdefault(violation.field, [])
            if violation.message not in messages:
                messages.append(violation.message)
    return Unprocessable(fields) if fields else None


def _escape(part: str) -> str:
    """One JSON-pointer segment, as it may stand in a URI fragment."""
    return quote(part.replace("~", "~0").replace("/", "~1"), safe="~")


def _field_name(path: list[str | int], wrapped: bool = True) -> str:
    """``["prompt", "num_images"]`` → ``num_images``; nested → ``prompts_attributes[0].text``."""
    parts = list(path)
    if wrapped and parts and isinstance(parts[0], str) and len(parts) > 1:
        parts = parts[1:]
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else part
    return name or "base"


Kind = jsonschema_rs.ValidationErrorKind


def _violation(error: jsonschema_rs.ValidationError) -> Violation:
    kind = error.kind
    name = type(kind).__name__
    path = list(error.instance_path)
    if isinstance(kind, Kind.Required):
        return Violation(_field_name([*path, kind.property]), "can't be blank", name)
    if isinstance(kind, Kind.AnyOf):
        alternatives = _required_alternatives(kind)
        if alternatives:
            field = _field_name([*path, alternatives[0]])
            others = ", ".join(alternatives[1:])
            return Violation(field, f"can't be blank (send {field} or {others})", name)
    return Violation(_field_name(path), _rails_message(error), name)


def _required_alternatives(kind: jsonschema_rs.ValidationErrorKind.AnyOf) -> list[str]:
    """For ``anyOf: [{required: [a]}, {required: [b]}]`` the names a and b, else []."""
    names: list[str] = []
    for branch in kind.context:
        kinds = [sub.kind for sub in branch]
        if len(kinds) != 1 or not isinstance(kinds[0], Kind.Required):
            return []
        names.append(kinds[0].property)
    return names


_LIMIT_MESSAGES: dict[type[jsonschema_rs.ValidationErrorKind], str] = {
    Kind.Maximum: "must be less than or equal to {}",
    Kind.Minimum: "must be greater than or equal to {}",
    Kind.ExclusiveMaximum: "must be less than {}",
    Kind.ExclusiveMinimum: "must be greater than {}",
    Kind.MinLength: "is too short (minimum is {} characters)",
    Kind.MaxLength: "is too long (maximum is {} characters)",
    Kind.MinItems: "is too short (minimum is {} items)",
    Kind.MaxItems: "is too long (maximum is {} items)",
}
_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "string": "a string",
    "object": "an object",
    "array": "an array",
    "null": "null",
}


def _rails_message(error: jsonschema_rs.ValidationError) -> str:
    """Messages in the words Rails validations use, which clients show to people."""
    kind = error.kind
    template = _LIMIT_MESSAGES.get(type(kind))
    if template is not None:
        return template.format(getattr(kind, "limit", ""))
    if isinstance(kind, Kind.Enum):
        options = ", ".join("null" if o is None else str(o) for o in kind.options)
        return f"is not included in the list ({options})"
    if isinstance(kind, Kind.Type):
        return "must be " + " or ".join(_TYPE_WORDS.get(t, t) for t in kind.types)
    if isinstance(kind, Kind.MultipleOf):
        return f"must be a multiple of {kind.multiple_of}"
    if isinstance(kind, Kind.Format):
        return f"is not a valid {kind.format}"
    if isinstance(kind, Kind.Pattern):
        return "is invalid"
    return str(error.message)
