"""``astria-mock check-webhook URL``: does a client's webhook receiver take every valid callback?

The contract describes the callbacks Astria POSTs when a tune is ready or a prompt is done
(``webhooks`` / ``components.pathItems`` in ``openapi.yaml``): ``{"tune": {...}}`` and
``{"prompt": {...}}``, each a ``TuneEnvelope`` / ``PromptEnvelope``. This check sends the
spec's own examples of those bodies, then bodies generated from the two schemas with
hypothesis (through schemathesis, so formats such as ``date-time`` and ``uri`` are real),
as ``POST application/json`` to the receiver, and reports every valid body it did not
answer with a 2xx. Exit code 0 only when the receiver took them all.
"""

from __future__ import annotations

import copy
import json
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import httpx
import jsonschema_rs
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from schemathesis.core.result import Err

from mockserver import __version__
from mockserver.contract import follow_refs, load_document

from .cli import DEFAULT_COUNT, DEFAULT_TIMEOUT

DIALECT = "https://json-schema.org/draft/2020-12/schema"
ENVELOPES = {"tune": "TuneEnvelope", "prompt": "PromptEnvelope"}
CALLBACK_ITEMS = {"tune": "TuneCallback", "prompt": "PromptCallback"}
ENTITY_SCHEMAS = {"Tune": "tune", "Prompt": "prompt"}
SHOWN_BODY_CHARS = 2000


def component_validator(document: dict[str, Any], name: str) -> jsonschema_rs.Validator:
    """A validator for ``#/components/schemas/<name>``, its ``$ref`` s resolved in the document."""
    root = {**document, "$schema": DIALECT, "$ref": f"#/components/schemas/{name}"}
    return jsonschema_rs.Draft202012Validator(root, validate_formats=True)


def schema_errors(validator: jsonschema_rs.Validator, instance: Any) -> list[str]:
    """Every way ``instance`` breaks the schema, as ``path: message`` lines."""
    return [
        f"{'/'.join(map(str, error.instance_path)) or '(body)'}: {error.message}"
        for error in validator.iter_errors(instance)
    ]


@dataclass(frozen=True, slots=True)
class CallbackBody:
    """One body to send: which entity, where it comes from, the JSON itself."""

    kind: str
    source: str
    body: dict[str, Any]


def example_bodies(document: dict[str, Any]) -> list[CallbackBody]:
    """The spec's own callback examples, then every tune and prompt example, wrapped."""
    found: list[CallbackBody] = []
    components = document["components"]
    for kind, item in CALLBACK_ITEMS.items():
        media = components["pathItems"][item]["post"]["requestBody"]["content"]["application/json"]
        for name, example in media.get("examples", {}).items():
            found.append(
                CallbackBody(
                    kind, f"example {item}/{name}", follow_refs(document, example)["value"]
                )
            )
    for name, example in components.get("examples", {}).items():
        value = follow_refs(document, example).get("value")
        for kind, entity in entities(value):
            found.append(CallbackBody(kind, f"example {name}", {kind: entity}))
    validators = {kind: component_validator(document, name) for kind, name in ENVELOPES.items()}
    unique: dict[str, CallbackBody] = {}
    for candidate in found:
        key = json.dumps(candidate.body, sort_keys=True)
        if key not in unique and validators[candidate.kind].is_valid(candidate.body):
            unique[key] = candidate
    return list(unique.values())


def entities(value: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """The tunes and prompts in a JSON value: objects shaped like one (lists searched too)."""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("id"), int):
            if "model_type" in item and "orig_images" in item:
                yield "tune", item
            elif "images" in item and "tune_id" in item:
                yield "prompt", item


def _callback_document(document: dict[str, Any]) -> dict[str, Any]:
    """The document with the two callback path items as its only paths, so schemathesis
    generates their request bodies like any operation's."""
    narrowed = copy.deepcopy(document)
    narrowed.pop("webhooks", None)
    narrowed["paths"] = {
        f"/{kind}": copy.deepcopy(document["components"]["pathItems"][item])
        for kind, item in CALLBACK_ITEMS.items()
    }
    return narrowed


def generated_bodies(document: dict[str, Any], count: int, seed: int) -> list[CallbackBody]:
    """Up to ``count`` distinct valid bodies per entity, drawn from the envelope schemas."""
    # Text the API can hold: no unpaired UTF-16 surrogates (not UTF-8), no NUL (Postgres).
    config = schemathesis.Config.from_dict({"generation": {"codec": "utf-8", "allow-x00": False}})
    schema = schemathesis.openapi.from_dict(_callback_document(document), config=config)
    validators = {kind: component_validator(document, name) for kind, name in ENVELOPES.items()}
    bodies: list[CallbackBody] = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operation = result.ok()
        kind = operation.path.strip("/")
        drawn = _draw(operation, validators[kind], count, seed)
        for index, body in enumerate(drawn[:count]):
            bodies.append(CallbackBody(kind, f"generated {kind} #{index + 1}", body))
    return bodies


def _draw(
    operation: Any, validator: jsonschema_rs.Validator, count: int, seed: int
) -> list[dict[str, Any]]:
    """Distinct valid request bodies of one operation, in the order hypothesis drew them."""
    drawn: dict[str, dict[str, Any]] = {}

    @hypothesis_seed(seed)
    @settings(
        max_examples=count,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE))
    def draw(case: Any) -> None:
        body = case.body
        if isinstance(body, dict) and validator.is_valid(body):
            drawn.setdefault(json.dumps(body, sort_keys=True), body)

    draw()
    return list(drawn.values())


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the receiver answered to one body."""

    sent: CallbackBody
    status: int | None
    answer: str
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def deliver(client: httpx.Client, url: str, item: CallbackBody) -> Delivery:
    content = json.dumps(item.body, ensure_ascii=False).encode()
    try:
        response = client.post(url, content=content)
    except httpx.HTTPError as exc:
        return Delivery(item, None, "", f"{type(exc).__name__}: {exc}")
    return Delivery(item, response.status_code, response.text[:500])


def _shown(body: dict[str, Any]) -> str:
    text = json.dumps(body, ensure_ascii=False)
    return text if len(text) <= SHOWN_BODY_CHARS else text[:SHOWN_BODY_CHARS] + " …"


def check_webhook(
    url: str,
    *,
    count: int = DEFAULT_COUNT,
    seed: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    out: TextIO | None = None,
) -> int:
    """Send every example and ``count`` generated bodies per entity; 0 when all got a 2xx."""
    out = out or sys.stdout
    seed = random.randrange(2**32) if seed is None else seed
    print(f"astria-mock check-webhook {url}", file=out)
    print(
        f"seed: {seed} (replay with --seed {seed}); {count} generated bodies per entity", file=out
    )
    document = load_document()
    unique: dict[str, CallbackBody] = {}
    for item in example_bodies(document) + generated_bodies(document, count, seed):
        unique.setdefault(json.dumps(item.body, sort_keys=True), item)
    bodies = list(unique.values())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"astria-mock-check-webhook/{__version__}",
    }
    with httpx.Client(timeout=timeout, headers=headers, follow_redirects=False) as client:
        deliveries = [deliver(client, url, item) for item in bodies]
    refused = [d for d in deliveries if not d.accepted]
    for kind in ENVELOPES:
        sent = [d for d in deliveries if d.sent.kind == kind]
        taken = sum(d.accepted for d in sent)
        print(f"  {kind} callbacks: {taken} of {len(sent)} accepted with a 2xx", file=out)
    for delivery in refused:
        what = delivery.error or f"answered {delivery.status}: {delivery.answer!r}"
        print(f"\nFAIL {delivery.sent.source}: {what}", file=out)
        print(f"  body sent: {_shown(delivery.sent.body)}", file=out)
    if refused:
        print(
            f"\nFAILED: {len(refused)} of {len(deliveries)} valid bodies were not accepted",
            file=out,
        )
        return 1
    print(f"\nOK: all {len(deliveries)} valid callback bodies were accepted", file=out)
    return 0
