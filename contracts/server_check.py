"""``astria-mock check-server URL``: does a server keep the Astria contract?

Two parts, one report:

* **schemathesis** runs against the URL with the bundled ``openapi.yaml``: its examples,
  coverage, fuzzing and stateful phases, positive and negative data, every built-in check.
  Generated requests are made acceptable before they are sent (a ``before_call`` hook): file
  parts become real JPEGs, JSON images ``data:image/jpeg;base64,...`` URLs, adapter tags point
  at a FaceID tune the kit made, callbacks at the kit's own receiver, and the rules the schema
  cannot state (a tune that must exist, a FaceID tune that cannot be prompted, gallery tunes
  that cannot be deleted, an ``image_index`` within the prompt's images, ``inpaint_faces`` and
  ``hires_fix`` needing ``super_resolution``, ``controlnet`` needing an input image) are kept.
  Negative data is sent as generated (only the kit's own FaceID tune and the gallery are kept
  out of deletes). Failures that are not the server's are dropped: a "negative" body that means
  the same as a valid one on the wire (forms, unknown fields the API ignores), a resource
  "missing" after the run deleted it under another path.
* **Astria checks**, plain httpx: tune creation answers 201; a FaceID tune is trained at
  creation; prompting it directly is the documented 422; a deep offset is 400; every 429
  carries ``Retry-After``; a finished prompt's images download as decodable images; tune and
  prompt callbacks arrive at a local receiver with the documented bodies.

``--live`` is the safe mode for the real API: positive data only, reads plus ``branch=fast``
tunes, prompts only on the kit's own fast tunes, deletes only of what the run created, and a
client-side rate limit. Exit code 0 only when every check held.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import shlex
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
import jsonschema_rs
import schemathesis
from PIL import Image, ImageDraw
from schemathesis.engine import events, from_schema
from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER, HookContext
from schemathesis.transport.serialization import Binary
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mockserver import __version__
from mockserver.contract import load_document

from .cli import DEFAULT_MAX_EXAMPLES, PHASES, SCHEMATHESIS_PHASES
from .servers import LiveServer
from .webhook_check import ENVELOPES, component_validator, entities, schema_errors

FACEID_MESSAGE = "model_type=faceid is not supported. Use a checkpoint instead"
GALLERY_TUNE = 690204
GALLERY_TUNES = frozenset({690204, 1504944})
UNKNOWN_ID = 2**31 - 1
# Reads, plus the writes --live allows: tunes (forced to branch=fast) and prompts on the
# run's own fast tunes. Deletes and likes are left to the kit's own clean-up.
LIVE_OPERATIONS = (
    "listTunes", "getTune", "getTuneJson", "createTune", "createPrompt", "listTunePrompts",
    "getTunePrompt", "getTunePromptJson", "listPrompts", "getPrompt", "getPromptJson",
    "duplicatePrompt",
)  # fmt: skip
TAG = re.compile(r"<(faceid|lora):([^<>]*)>")
JSON = "application/json"
MULTIPART = "multipart/form-data"
MAX_SHOWN_FINDINGS = 5
MAX_SHOWN_LINE = 2000
SHOWN_CHARS = 1500
# Characters XML 1.0 cannot hold (report text can carry any byte a fuzzer sent).
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
POLL_INTERVAL = 2.0
RETRIES_ON_429 = 3
MAX_RETRY_AFTER = 30.0


# ---- images -------------------------------------------------------------------------------


def make_jpeg(index: int = 0, size: int = 96) -> bytes:
    """A small, real JPEG: a face-ish oval on a colour that depends on ``index``."""
    colour = ((index * 67) % 200 + 40, (index * 131) % 200 + 40, (index * 29) % 200 + 40)
    image = Image.new("RGB", (size, size), colour)
    draw = ImageDraw.Draw(image)
    draw.ellipse((size // 4, size // 6, size * 3 // 4, size * 5 // 6), fill=(224, 172, 140))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


JPEGS = tuple(make_jpeg(i) for i in range(4))


def data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


# ---- the report ---------------------------------------------------------------------------


@dataclass(slots=True)
class Finding:
    """One way a check failed, with the request that shows it."""

    title: str
    message: str
    curl: str = ""
    where: str = ""


@dataclass(slots=True)
class CheckResult:
    """One named check: how often it held, how it failed, or why it did not run."""

    name: str
    description: str
    group: str
    passed: int = 0
    findings: list[Finding] = field(default_factory=list)
    not_run: str | None = None
    note: str = ""

    @property
    def status(self) -> str:
        if self.findings:
            return "FAIL"
        if self.not_run is not None:
            return "SKIP"
        return "PASS"


@dataclass(slots=True)
class Report:
    seed: int
    checks: dict[str, CheckResult] = field(default_factory=dict)
    cases: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    def check(self, name: str, description: str, group: str = "astria") -> CheckResult:
        if name not in self.checks:
            self.checks[name] = CheckResult(name, description, group)
        return self.checks[name]

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks.values() if c.status == "FAIL"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.errors


# ---- options ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    url: str
    api_key: str
    seed: int
    max_examples: int = DEFAULT_MAX_EXAMPLES
    phases: tuple[str, ...] = PHASES
    live: bool = False
    rate: float | None = None
    junit_xml: Path | None = None
    prompt_timeout: float = 180.0
    callback_timeout: float = 30.0
    callback_base: str | None = None
    request_timeout: float = 30.0

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")


class RateLimiter:
    """At most ``per_second`` requests a second across threads; ``None`` does not limit."""

    def __init__(self, per_second: float | None) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


# ---- what the run has seen ----------------------------------------------------------------


class RunState:
    """What the server answered so far: the tunes and prompts the fixes must respect."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.faceid_tunes: set[int] = set()
        self.own_tunes: list[int] = []
        self.own_fast_tunes: set[int] = set()
        self.own_prompts: dict[int, int] = {}
        self.prompt_images: dict[int, int] = {}
        self.protected: set[int] = set(GALLERY_TUNES)
        self.tag_tune: int | None = None
        self.home_tune: int | None = None
        self.home_prompt: int | None = None
        self.deleted_tunes: set[int] = set()
        self.deleted_prompts: set[int] = set()
        self.responses = 0
        self.rate_limited = 0
        self.missing_retry_after: list[Finding] = []

    def observe(
        self,
        method: str,
        path: str,
        status: int,
        headers: Mapping[str, Any],
        content: bytes,
        curl: Callable[[], str],
    ) -> None:
        """Learn from one answer (any client's): ids, kinds, image counts, 429s."""
        with self.lock:
            self.responses += 1
            if status == 429:
                self.rate_limited += 1
                if not any(name.lower() == "retry-after" for name in headers):
                    self.missing_retry_after.append(
                        Finding("429 without Retry-After", f"{method} {path} → 429", curl())
                    )
        if method == "DELETE" and status == 200:
            self._deleted(path)
        try:
            body = json.loads(content) if content else None
        except ValueError:
            return
        created = method == "POST" and status == 201
        with self.lock:
            for kind, entity in entities(body):
                if kind == "tune":
                    if entity.get("model_type") == "faceid":
                        self.faceid_tunes.add(entity["id"])
                    if created and path.rstrip("/") == "/tunes":
                        self.own_tunes.append(entity["id"])
                        if entity.get("branch") == "fast" and entity.get("model_type") != "faceid":
                            self.own_fast_tunes.add(entity["id"])
                else:
                    images = entity.get("images")
                    if isinstance(images, list):
                        self.prompt_images[entity["id"]] = len(images)
                    if created and isinstance(entity.get("tune_id"), int):
                        self.own_prompts[entity["id"]] = entity["tune_id"]

    def _deleted(self, path: str) -> None:
        prompt = PROMPT_PATH.match(path)
        tune = TUNE_PATH.match(path)
        with self.lock:
            if prompt is not None:
                self.deleted_prompts.add(int(prompt.group("id")))
            elif tune is not None:
                self.deleted_tunes.add(int(tune.group("id")))

    def gone(self, path_parameters: Mapping[str, Any], prompt_path: bool) -> bool:
        """Whether the run deleted what a path names (a prompt, its tune, or the tune)."""
        with self.lock:
            if prompt_path:
                prompt_id = _as_id(path_parameters.get("id"))
                tune_id = _as_id(path_parameters.get("tune_id"))
                owner = self.own_prompts.get(prompt_id or 0)
                return (
                    prompt_id in self.deleted_prompts
                    or tune_id in self.deleted_tunes
                    or owner in self.deleted_tunes
                )
            return _as_id(path_parameters.get("id")) in self.deleted_tunes


PROMPT_PATH = re.compile(r"^(?:/tunes/\d+)?/prompts/(?P<id>\d+)$")
TUNE_PATH = re.compile(r"^/tunes/(?P<id>\d+)$")


# ---- keeping generated requests acceptable -------------------------------------------------


class Fields:
    """The fields of one input object in a body, the same way for JSON and the form shapes."""

    def __init__(self, data: dict[str, Any], prefix: str | None, media_type: str | None) -> None:
        self.data = data
        self.prefix = prefix
        self.media_type = media_type
        self.form = prefix is not None
        self.true: Any = "true" if self.form else True
        self.false: Any = "false" if self.form else False

    def key(self, name: str, array: bool = False) -> str:
        if self.prefix is None:
            return name
        return f"{self.prefix}[{name}][]" if array else f"{self.prefix}[{name}]"

    def has(self, name: str, array: bool = False) -> bool:
        return self.key(name, array) in self.data

    def get(self, name: str, array: bool = False) -> Any:
        return self.data.get(self.key(name, array))

    def set(self, name: str, value: Any, array: bool = False) -> None:
        self.data[self.key(name, array)] = value

    def pop(self, name: str, array: bool = False) -> None:
        self.data.pop(self.key(name, array), None)

    def is_true(self, name: str) -> bool:
        value = self.get(name)
        return value is True or value == "true"

    def is_set(self, name: str) -> bool:
        value = self.get(name)
        return isinstance(value, Binary) or value not in (None, "", b"")

    def image(self, index: int = 0) -> Any:
        """An image as this shape carries one: a file part, or a data URL."""
        jpeg = JPEGS[index % len(JPEGS)]
        return Binary(jpeg) if self.media_type == MULTIPART else data_url(jpeg)


def _as_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _replace_id(params: dict[str, Any], name: str, value: int) -> None:
    params[name] = str(value) if isinstance(params.get(name), str) else value


class CaseFixer:
    """Makes positive cases acceptable to a server that keeps the contract, just before
    they are sent. Negative cases are left exactly as generated."""

    def __init__(
        self,
        schema: Any,
        state: RunState,
        limiter: RateLimiter,
        *,
        live: bool,
        callback_base: str | None,
        example_image_url: str,
    ) -> None:
        self.schema = schema
        self.state = state
        self.limiter = limiter
        self.live = live
        self.callback_base = callback_base
        self.example_image_url = example_image_url

    # hooks ---------------------------------------------------------------
    def before_call(self, context: HookContext, case: Any, kwargs: dict[str, Any]) -> None:
        if case.operation.schema is not self.schema:
            return
        self.limiter.wait()
        meta = case.meta
        positive = meta is None or meta.generation.mode == schemathesis.GenerationMode.POSITIVE
        operation_id = case.operation.definition.raw.get("operationId", "")
        with self.state.lock:
            self.fix_path(operation_id, case.path_parameters, positive)
            if positive:
                self.fix_body(operation_id, case)
        if positive:
            # The fixes keep a valid case valid; without this schemathesis would revalidate
            # it, and a body holding files cannot be validated, so it would count as negative.
            sync = getattr(case, "_sync_validated_hashes", None)
            if callable(sync):
                sync()

    def after_call(self, context: HookContext, case: Any, response: Any) -> None:
        self.state.observe(
            case.method.upper(),
            case.formatted_path,
            response.status_code,
            response.headers,
            response.content,
            case.as_curl_command,
        )

    # paths ---------------------------------------------------------------
    def fix_path(self, operation_id: str, params: dict[str, Any], positive: bool) -> None:
        """Path ids arrive as ints or, from some phases, as text: both are compared.

        A positive case only addresses what this run knows: a tune or prompt left on the
        server by someone else may reference tunes since deleted (a 422 that is no fault).
        """
        state = self.state
        if operation_id == "deleteTune" and _as_id(params.get("id")) in state.protected:
            _replace_id(params, "id", UNKNOWN_ID)
        elif operation_id == "createPrompt" and (positive or self.live):
            tune_id = _as_id(params.get("tune_id"))
            if self.live:
                if tune_id not in state.own_fast_tunes and state.home_tune:
                    _replace_id(params, "tune_id", state.home_tune)
            elif tune_id not in GALLERY_TUNES and (
                tune_id not in state.own_tunes or tune_id in state.faceid_tunes
            ):
                _replace_id(params, "tune_id", GALLERY_TUNE)
        elif (
            operation_id == "duplicatePrompt"
            and (positive or self.live)
            and _as_id(params.get("id")) not in state.own_prompts
        ):
            target = state.home_prompt if self.live else max(state.own_prompts, default=None)
            _replace_id(params, "id", target or UNKNOWN_ID)

    # bodies --------------------------------------------------------------
    def fix_body(self, operation_id: str, case: Any) -> None:
        body = case.body
        if not isinstance(body, dict):
            return
        form = case.media_type in (MULTIPART, "application/x-www-form-urlencoded")
        if form:  # numbers travel as text: 3.0 would arrive as "3.0", not an integer
            for name, value in body.items():
                if isinstance(value, float) and value.is_integer():
                    body[name] = int(value)
        if operation_id == "createTune":
            tune = Fields(body, "tune", case.media_type) if form else self._inner(body, "tune")
            if tune is not None:
                self.fix_tune(tune)
        elif operation_id in ("createPrompt", "duplicatePrompt"):
            duplicate = operation_id == "duplicatePrompt"
            prompt = (
                Fields(body, "prompt", case.media_type) if form else self._inner(body, "prompt")
            )
            if prompt is not None:
                self.fix_prompt(prompt, duplicate=duplicate)
            if duplicate and "image_index" in body:
                self.fix_image_index(body, case.path_parameters.get("id"))

    def _inner(self, body: dict[str, Any], wrapper: str) -> Fields | None:
        inner = body.get(wrapper)
        return Fields(inner, None, JSON) if isinstance(inner, dict) else None

    def fix_tune(self, tune: Fields) -> None:
        images = tune.get("images", array=True)
        if isinstance(images, list):
            tune.set("images", [tune.image(i) for i in range(len(images))], array=True)
        self.fix_callback(tune, "tune")
        faceid = tune.get("model_type") == "faceid"
        if tune.get("base_tune_id") is not None and not faceid:
            if self.live:
                tune.pop("base_tune_id")
            else:
                tune.set("base_tune_id", GALLERY_TUNE)
        texts_key = "tune[prompts_attributes][][text]"
        if faceid:  # a FaceID tune cannot carry prompts: that is the FaceID 422
            tune.pop("prompts_attributes")
            tune.data.pop(texts_key, None)
        attributes = tune.get("prompts_attributes")
        if isinstance(attributes, list):
            for item in attributes:
                if isinstance(item, dict):
                    self.fix_prompt(Fields(item, None, JSON), duplicate=False)
        texts = tune.data.get(texts_key) if tune.form else None
        if isinstance(texts, list):
            tune.data[texts_key] = [self.fix_text(t) if isinstance(t, str) else t for t in texts]
        if self.live:
            tune.set("branch", "fast")
            tune.pop("auto_extend")
            urls = tune.get("image_urls", array=True)
            if isinstance(urls, list):
                tune.set("image_urls", [self.example_image_url] * len(urls), array=True)

    def fix_prompt(self, prompt: Fields, *, duplicate: bool) -> None:
        text = prompt.get("text")
        if isinstance(text, str):
            prompt.set("text", self.fix_text(text))
        self.fix_callback(prompt, "prompt")
        if prompt.is_true("inpaint_faces") or prompt.is_true("hires_fix"):
            prompt.set("super_resolution", prompt.true)
        elif (
            duplicate and prompt.has("super_resolution") and not prompt.is_true("super_resolution")
        ):
            # the original may have inpaint_faces or hires_fix on
            prompt.set("inpaint_faces", prompt.false)
            prompt.set("hires_fix", prompt.false)
        for name in ("input_image", "mask_image"):
            if prompt.is_set(name):
                prompt.set(name, prompt.image(1 if name == "mask_image" else 0))
        if prompt.is_set("input_image_base64"):
            prompt.set("input_image_base64", data_url(JPEGS[2]))
        inputs = ("input_image", "input_image_url", "input_image_base64")
        if duplicate:  # an explicit empty input would take away the original's
            for name in inputs:
                if prompt.has(name) and not prompt.is_set(name):
                    prompt.pop(name)
        if prompt.is_set("controlnet") and not any(prompt.is_set(n) for n in inputs):
            prompt.set("input_image_base64", data_url(JPEGS[2]))
        if self.live:
            prompt.pop("community")
            for name in ("input_image_url", "mask_image_url"):
                if prompt.is_set(name):
                    prompt.set(name, self.example_image_url)

    def fix_text(self, text: str) -> str:
        """Adapter tags name the kit's own FaceID tune (never a LoRA: none is known)."""
        tag_tune = None if self.live else self.state.tag_tune

        def replace(match: re.Match[str]) -> str:
            if match.group(1) == "faceid" and tag_tune is not None:
                return f"<faceid:{tag_tune}:1>"
            return ""

        fixed = TAG.sub(replace, text)
        return fixed or "portrait photo"

    def fix_callback(self, fields: Fields, kind: str) -> None:
        if not fields.has("callback"):
            return
        if self.callback_base is None:
            fields.pop("callback")
        elif fields.get("callback") is not None:
            fields.set("callback", f"{self.callback_base}/schemathesis/{kind}")

    def fix_image_index(self, body: dict[str, Any], prompt_id: Any) -> None:
        images = self.state.prompt_images.get(_as_id(prompt_id) or 0, 0)
        index = body.get("image_index")
        if isinstance(index, str) and index.isdigit():
            index = int(index)
        if isinstance(index, float) and index.is_integer():
            index = int(index)
        if isinstance(index, bool) or not isinstance(index, int) or index < images:
            return
        if images:
            body["image_index"] = images - 1
        else:
            body.pop("image_index")


class WireEquivalence:
    """Whether a "negative" body means what a valid one means, so a server may take it.

    A form cannot tell a one-item array from a scalar (``tune[x][]=a``), sends a list for a
    single field as repeated parts (Rails keeps the last), sends every value as text, and the
    contract reads an empty form value as null for a nullable field. Unknown fields are outside the
    contract for clients, but the API ignores them (the spec says so), so a server that
    takes a body valid but for unknown fields keeps the contract. schemathesis calls such
    bodies negative; their "accepted" failures are dropped.
    """

    FORMS = (MULTIPART, "application/x-www-form-urlencoded")

    def __init__(self, document: dict[str, Any], state: RunState) -> None:
        self.document = document
        self.state = state
        self._validators: dict[str, jsonschema_rs.Validator] = {}

    def filter_failure(self, context: HookContext, failure: Any, case: Any, response: Any) -> bool:
        """The ``filter_failure`` hook: False drops the failure."""
        code = getattr(failure, "code", "")
        if code == "ST302":
            # "created resource not found" after the run deleted it under another path
            # (DELETE /prompts/1, then GET /tunes/5/prompts/1): schemathesis misses the alias.
            return not self.state.gone(case.path_parameters or {}, "/prompts/" in case.path)
        if code != "ST201":
            return True
        return not self.valid_on_the_wire(case)

    def valid_on_the_wire(self, case: Any) -> bool:
        body = case.body
        content = case.operation.definition.raw.get("requestBody", {}).get("content", {})
        schema = content.get(case.media_type, {}).get("schema")
        if not isinstance(body, dict) or not isinstance(schema, dict) or "$ref" not in schema:
            return False
        ref = schema["$ref"]
        validator = self._validators.get(ref)
        if validator is None:
            root = {**self.document, "$schema": "https://json-schema.org/draft/2020-12/schema"}
            validator = jsonschema_rs.Draft202012Validator({**root, "$ref": ref})
            self._validators[ref] = validator
        form = case.media_type in self.FORMS
        normalized = self._normalize(_files_as_text(body), schema, form, depth=2)
        return bool(validator.is_valid(normalized))

    def _normalize(
        self, body: dict[str, Any], schema: Any, form: bool, depth: int
    ) -> dict[str, Any]:
        """Unknown fields dropped; in forms, wire ambiguities read as the contract reads them."""
        properties = self._properties(schema)
        normalized: dict[str, Any] = {}
        for name, value in body.items():
            declared = properties.get(name)
            if not isinstance(declared, dict):
                continue
            if form:
                if value == "" and self._nullable(declared):
                    continue
                types = self._types(declared)
                if "array" in types:
                    items = self._resolve(declared).get("items", {})
                    value = [
                        self._as_text(item, items)
                        for item in (value if isinstance(value, list) else [value])
                    ]
                elif isinstance(value, list):  # repeated parts: Rails keeps the last
                    if not value:
                        continue
                    value = self._as_text(value[-1], declared)
                else:
                    value = self._as_text(value, declared)
            elif isinstance(value, dict) and depth > 1:
                value = self._normalize(value, declared, form, depth - 1)
            normalized[name] = value
        return normalized

    def _as_text(self, value: Any, declared: Any) -> Any:
        """A value of a string field as it arrives: any value travels as text."""
        if self._types(declared) == {"string"} and not isinstance(value, str):
            return json.dumps(value)
        return value

    def _resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            target: Any = self.document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def _branches(self, schema: Any) -> Iterator[dict[str, Any]]:
        schema = self._resolve(schema)
        if isinstance(schema, dict):
            yield schema
            for sub in schema.get("allOf", []):
                yield from self._branches(sub)

    def _properties(self, schema: Any) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for branch in self._branches(schema):
            found.update(branch.get("properties", {}))
        return found

    def _types(self, schema: Any) -> set[str]:
        types: set[str] = set()
        for branch in self._branches(schema):
            kind = branch.get("type")
            types.update([kind] if isinstance(kind, str) else kind or [])
        return types

    def _nullable(self, schema: Any) -> bool:
        """A form field whose contract schema admits null (the form narrows it to a string)."""
        return any(
            "null" in ([b["type"]] if isinstance(b.get("type"), str) else b.get("type", []))
            or None in b.get("enum", [0])
            for b in self._branches(schema)
        )


def _files_as_text(value: Any) -> Any:
    """File contents stand in as text, which a ``format: binary`` string schema takes."""
    if isinstance(value, Binary | bytes):
        return "file"
    if isinstance(value, dict):
        return {k: _files_as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_files_as_text(v) for v in value]
    return value


# ---- the callback receiver ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    query: str
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A webhook receiver on 127.0.0.1 that keeps every POST it gets and answers 204."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/{path:path}", self._record, methods=["POST"])])
        self.server = LiveServer(app=app)
        self.url = self.server.url

    async def _record(self, request: Request) -> Response:
        body = await request.body()
        item = Received(
            request.url.path, request.url.query, request.headers.get("content-type", ""), body
        )
        with self._lock:
            self.received.append(item)
        return Response(status_code=204)

    def matching(self, prefix: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path.startswith(prefix)]

    def wait_for(self, prefix: str, timeout: float) -> Received | None:
        deadline = time.monotonic() + timeout
        while True:
            found = self.matching(prefix)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)


# ---- the kit's own requests ---------------------------------------------------------------


@dataclass(slots=True)
class Exchange:
    response: httpx.Response
    curl: str

    @property
    def status(self) -> int:
        return self.response.status_code

    def json(self) -> Any:
        try:
            return self.response.json()
        except ValueError:
            return None

    def shown(self) -> str:
        text = self.response.text
        return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + " …"


def curl_command(
    method: str,
    url: str,
    *,
    json_body: Any = None,
    data: Mapping[str, Any] | None = None,
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
    auth: bool = True,
) -> str:
    parts = ["curl", "-X", method]
    if auth:
        parts += ["-H", '"Authorization: Bearer $ASTRIA_API_KEY"']
    if json_body is not None:
        parts += ["-H", shlex.quote("Content-Type: application/json")]
        parts += ["-d", shlex.quote(json.dumps(json_body, ensure_ascii=False))]
    for name, value in (data or {}).items():
        flag = "-F" if files else "--data-urlencode"
        parts += [flag, shlex.quote(f"{name}={value}")]
    for name, (filename, _, media_type) in files or []:
        parts += ["-F", shlex.quote(f"{name}=@{filename};type={media_type}")]
    parts.append(shlex.quote(url))
    return " ".join(parts)


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait after a 429 (its Retry-After, at most ``MAX_RETRY_AFTER``, else 1);
    None for any other answer. A 429 without the header is reported, and still waited out."""
    if response.status_code != 429:
        return None
    try:
        return max(0.0, min(float(response.headers.get("retry-after", "")), MAX_RETRY_AFTER))
    except ValueError:
        return 1.0


class ApiClient:
    """httpx for the Astria checks: the key, the rate limit, and every answer observed."""

    def __init__(self, options: Options, state: RunState, limiter: RateLimiter) -> None:
        self.base_url = options.base_url
        self.state = state
        self.limiter = limiter
        self.client = httpx.Client(
            timeout=options.request_timeout,
            headers={
                "Authorization": f"Bearer {options.api_key}",
                "User-Agent": f"astria-mock-check-server/{__version__}",
            },
            follow_redirects=False,
        )

    def close(self) -> None:
        self.client.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: dict[str, Any] | None = None,
        files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Exchange:
        url = self.base_url + path
        if params:
            url += "?" + str(httpx.QueryParams(params))
        curl = curl_command(method, url, json_body=json_body, data=data, files=files)
        for attempt in range(RETRIES_ON_429 + 1):
            self.limiter.wait()
            response = self.client.request(method, url, json=json_body, data=data, files=files)
            self.state.observe(
                method, path, response.status_code, response.headers, response.content, lambda: curl
            )
            wait = _retry_after(response)
            if wait is None or attempt == RETRIES_ON_429:
                break
            time.sleep(wait)  # as a client should: the kit's own checks are not about 429s
        return Exchange(response, curl)

    def download(self, url: str) -> httpx.Response:
        """An image URL: fetched without the key (it may live on another host)."""
        self.limiter.wait()
        return httpx.get(url, timeout=self.client.timeout, follow_redirects=True)


# ---- the Astria checks --------------------------------------------------------------------

CHECKS = {
    "tune_create_201": "tune creation answers 201 with a Tune",
    "faceid_trained_at_creation": "a FaceID tune is trained at creation "
    "(trained_at set, ckpt_url null, ckpt_urls [])",
    "faceid_prompt_422": "prompting a FaceID tune directly is the documented 422",
    "offset_too_deep_400": "an offset deeper than the maximum is 400",
    "retry_after_on_429": "a 429 carries Retry-After",
    "prompt_images_download": "a finished prompt's image URLs download as decodable images",
    "tune_callback_body": "a tune callback arrives with a TuneEnvelope body",
    "prompt_callback_body": "a prompt callback arrives with a PromptEnvelope body",
    "callback_bodies": "every callback received during the run matches its envelope",
    "live_cleanup": "the tunes the run created can be deleted (200 Message)",
}


class AstriaChecks:
    """The scenario checks, before and after schemathesis."""

    def __init__(
        self,
        options: Options,
        report: Report,
        client: ApiClient,
        state: RunState,
        receiver: Receiver,
        callback_base: str | None,
        document: dict[str, Any],
    ) -> None:
        self.options = options
        self.report = report
        self.client = client
        self.state = state
        self.receiver = receiver
        self.callback_base = callback_base
        self.document = document
        self.enabled = "astria" in options.phases
        self.validators = {
            name: component_validator(document, name)
            for name in (
                "Tune",
                "Prompt",
                "Error",
                "Message",
                "ValidationErrors",
                *ENVELOPES.values(),
            )
        }
        self.faceid_tune: int | None = None
        self.prompt_id: int | None = None
        self.is_mock = False

    def result(self, name: str) -> CheckResult:
        return self.report.check(name, CHECKS[name])

    def fail(self, name: str, title: str, message: str, exchange: Exchange | None = None) -> None:
        curl = exchange.curl if exchange is not None else ""
        if self.enabled:
            self.result(name).findings.append(Finding(title, message, curl))

    def held(self, name: str, note: str = "") -> None:
        if self.enabled:
            result = self.result(name)
            result.passed += 1
            if note:
                result.note = note

    def skip(self, name: str, reason: str) -> None:
        if self.enabled:
            self.result(name).not_run = reason

    def schema_problems(self, name: str, value: Any) -> list[str]:
        return schema_errors(self.validators[name], value)

    # before schemathesis -------------------------------------------------
    def setup(self) -> None:
        """The FaceID tune (tags point at it) and, for --live, a fast tune and prompt."""
        self.is_mock = self._probe_mock()
        self.faceid_tune = self.create_faceid_tune()
        if self.faceid_tune is not None:
            self.state.tag_tune = self.faceid_tune
            self.state.protected.add(self.faceid_tune)
            self.check_faceid_prompt(self.faceid_tune)
        if self.options.live:
            self.state.home_tune, self.state.home_prompt = self.create_home()

    def _probe_mock(self) -> bool:
        try:
            self.client.limiter.wait()
            answer = self.client.client.get(self.options.base_url + "/_mock/health")
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    def _tune_form(self, title: str, **fields: str) -> dict[str, Any]:
        data = {"tune[title]": title, "tune[name]": "man", **fields}
        if self.callback_base is not None:
            data["tune[callback]"] = f"{self.callback_base}/astria/tune"
        if self.options.live:
            data["tune[branch]"] = "fast"
        return data

    def create_faceid_tune(self) -> int | None:
        data = self._tune_form(
            f"astria-mock check-server {self.options.seed} FaceID", **{"tune[model_type]": "faceid"}
        )
        files = [("tune[images][]", ("face.jpg", JPEGS[0], "image/jpeg"))]
        exchange = self.client.call("POST", "/tunes", data=data, files=files)
        body = exchange.json()
        if exchange.status == 201:
            problems = self.schema_problems("Tune", body)
            if problems:
                self.fail(
                    "tune_create_201", "201 body is not a Tune", "; ".join(problems), exchange
                )
            else:
                self.held("tune_create_201")
        else:
            self.fail(
                "tune_create_201",
                f"POST /tunes answered {exchange.status}",
                f"the contract says 201 with the tune; got {exchange.status}: {exchange.shown()}",
                exchange,
            )
        if not (200 <= exchange.status < 300 and isinstance(body, dict)):
            self.skip("faceid_trained_at_creation", "no FaceID tune could be created")
            self.skip("faceid_prompt_422", "no FaceID tune could be created")
            return None
        tune_id = body.get("id")
        if not isinstance(tune_id, int):
            self.skip("faceid_trained_at_creation", "the created tune has no id")
            self.skip("faceid_prompt_422", "the created tune has no id")
            return None
        self.check_faceid_fields("POST /tunes", body, exchange)
        again = self.client.call("GET", f"/tunes/{tune_id}")
        if again.status == 200:
            self.check_faceid_fields(f"GET /tunes/{tune_id}", again.json(), again)
        else:
            self.fail(
                "faceid_trained_at_creation",
                f"GET /tunes/{tune_id} answered {again.status}",
                f"the tune just created should be there: {again.shown()}",
                again,
            )
        return tune_id

    def check_faceid_fields(self, where: str, tune: Any, exchange: Exchange) -> None:
        if not isinstance(tune, dict):
            self.fail("faceid_trained_at_creation", f"{where}: not a JSON object", "", exchange)
            return
        problems = []
        if "trained_at" not in tune:
            problems.append("trained_at is missing")
        elif tune["trained_at"] is None:
            problems.append("trained_at is null (a FaceID tune is trained at creation)")
        if "ckpt_url" not in tune:
            problems.append("ckpt_url is missing")
        elif tune["ckpt_url"] is not None:
            problems.append(f"ckpt_url is {tune['ckpt_url']!r}, not null")
        if tune.get("ckpt_urls", None) != []:
            problems.append(f"ckpt_urls is {tune.get('ckpt_urls', '(missing)')!r}, not []")
        if tune.get("model_type") != "faceid":
            problems.append(f"model_type is {tune.get('model_type', '(missing)')!r}, not 'faceid'")
        if problems:
            self.fail("faceid_trained_at_creation", where, "; ".join(problems), exchange)
        else:
            self.held("faceid_trained_at_creation")

    def check_faceid_prompt(self, tune_id: int) -> None:
        body = {"prompt": {"text": "portrait photo of ohwx man"}}
        exchange = self.client.call("POST", f"/tunes/{tune_id}/prompts", json_body=body)
        expected = {"base": [FACEID_MESSAGE]}
        if exchange.status == 422 and exchange.json() == expected:
            self.held("faceid_prompt_422")
            return
        self.fail(
            "faceid_prompt_422",
            f"POST /tunes/{tune_id}/prompts on a FaceID tune answered {exchange.status}",
            f"expected 422 {json.dumps(expected)}; got {exchange.shown()}",
            exchange,
        )

    def create_home(self) -> tuple[int | None, int | None]:
        """--live: a fast tune and a prompt on it, the only targets of prompts and duplicates."""
        data = self._tune_form(f"astria-mock check-server {self.options.seed} fast")
        files = [("tune[images][]", ("face.jpg", JPEGS[1], "image/jpeg"))]
        tune = self.client.call("POST", "/tunes", data=data, files=files).json()
        tune_id = tune.get("id") if isinstance(tune, dict) else None
        if not isinstance(tune_id, int):
            return None, None
        with self.state.lock:
            self.state.own_fast_tunes.add(tune_id)
        prompt = self.client.call(
            "POST", f"/tunes/{tune_id}/prompts", json_body={"prompt": {"text": "portrait photo"}}
        )
        body = prompt.json()
        prompt_id = body.get("id") if isinstance(body, dict) else None
        return tune_id, prompt_id if isinstance(prompt_id, int) else None

    # after schemathesis --------------------------------------------------
    def after(self) -> None:
        if self.options.live:
            self.skip("offset_too_deep_400", "--live sends positive data only")
        else:
            self.check_offsets()
        self.check_prompt_images()
        self.check_callbacks()
        self.check_retry_after()
        if self.options.live:
            self.cleanup()

    def check_offsets(self) -> None:
        parameters = self.document["components"]["parameters"]
        for path, name in (("/tunes", "TunesOffset"), ("/prompts", "PromptsOffset")):
            maximum = parameters[name]["schema"]["maximum"]
            exchange = self.client.call("GET", path, params={"offset": maximum + 1})
            problems = self.schema_problems("Error", exchange.json())
            if exchange.status == 400 and not problems:
                self.held("offset_too_deep_400")
            elif exchange.status == 400:
                self.fail(
                    "offset_too_deep_400", f"GET {path} 400 body", "; ".join(problems), exchange
                )
            else:
                self.fail(
                    "offset_too_deep_400",
                    f"GET {path}?offset={maximum + 1} answered {exchange.status}",
                    f"the maximum is {maximum}: expected 400 pointing to before_id; "
                    f"got {exchange.shown()}",
                    exchange,
                )

    def check_prompt_images(self) -> None:
        name = "prompt_images_download"
        if self.options.live:
            tune_id, text = self.state.home_tune, "portrait photo"
            if tune_id is None:
                self.fail(name, "no fast tune", "the run could not create its fast tune")
                return
        else:
            tune_id = GALLERY_TUNE
            face = f"<faceid:{self.faceid_tune}:1> " if self.faceid_tune else ""
            text = f"{face}portrait photo, trekking in the alps"
        prompt: dict[str, Any] = {"text": text, "num_images": 1}
        if self.callback_base is not None:
            prompt["callback"] = f"{self.callback_base}/astria/prompt"
        created = self.client.call(
            "POST", f"/tunes/{tune_id}/prompts", json_body={"prompt": prompt}
        )
        body = created.json()
        if (
            created.status != 201
            or not isinstance(body, dict)
            or not isinstance(body.get("id"), int)
        ):
            self.fail(
                name,
                f"POST /tunes/{tune_id}/prompts answered {created.status}",
                f"expected 201 with the pending prompt; got {created.shown()}",
                created,
            )
            self.skip("prompt_callback_body", "no prompt could be created")
            return
        prompt_id = body["id"]
        self.prompt_id = prompt_id
        if self.is_mock:
            self.client.limiter.wait()
            self.client.client.post(f"{self.options.base_url}/_mock/prompts/{prompt_id}/complete")
        finished = self.poll_prompt(prompt_id)
        if finished is None:
            return
        images = finished.json()["images"]
        shown = []
        for url in images:
            problem, detail = self.download_image(url)
            if problem:
                self.fail(name, f"image {url}", problem, finished)
                return
            shown.append(detail)
        self.held(name, note=", ".join(shown))

    def poll_prompt(self, prompt_id: int) -> Exchange | None:
        name = "prompt_images_download"
        deadline = time.monotonic() + self.options.prompt_timeout
        while True:
            exchange = self.client.call("GET", f"/prompts/{prompt_id}")
            body = exchange.json()
            if exchange.status != 200 or not isinstance(body, dict):
                self.fail(
                    name,
                    f"GET /prompts/{prompt_id} answered {exchange.status}",
                    exchange.shown(),
                    exchange,
                )
                return None
            problems = self.schema_problems("Prompt", body)
            if problems:
                self.fail(
                    name, f"GET /prompts/{prompt_id}: not a Prompt", "; ".join(problems), exchange
                )
                return None
            if body.get("user_error"):
                self.fail(name, "the prompt failed", f"user_error: {body['user_error']}", exchange)
                return None
            if body["images"]:
                if body["trained_at"] is None:
                    self.fail(
                        name,
                        "images without trained_at",
                        "a finished prompt has trained_at set",
                        exchange,
                    )
                    return None
                return exchange
            if time.monotonic() > deadline:
                self.fail(
                    name,
                    f"prompt {prompt_id} not done",
                    f"no images after {self.options.prompt_timeout:g} s (--prompt-timeout)",
                    exchange,
                )
                return None
            time.sleep(POLL_INTERVAL)

    def download_image(self, url: str) -> tuple[str, str]:
        """('', 'JPEG 512x640') when ``url`` downloads as an image, else (problem, '')."""
        try:
            answer = self.client.download(url)
        except httpx.HTTPError as exc:
            return f"could not be downloaded: {type(exc).__name__}: {exc}", ""
        if answer.status_code != 200:
            return f"answered {answer.status_code}", ""
        try:
            with Image.open(io.BytesIO(answer.content)) as image:
                image.load()
                return "", f"{image.format} {image.width}x{image.height}"
        except Exception as exc:
            return f"is not a decodable image ({len(answer.content)} bytes): {exc}", ""

    def check_callbacks(self) -> None:
        if self.callback_base is None:
            reason = "--live: the API cannot reach a receiver on 127.0.0.1 (see --callback-base)"
            for name in ("tune_callback_body", "prompt_callback_body", "callback_bodies"):
                self.skip(name, reason)
            return
        timeout = self.options.callback_timeout
        for kind, entity_id in (("tune", self.faceid_tune), ("prompt", self.prompt_id)):
            name = f"{kind}_callback_body"
            if entity_id is None:
                self.skip(name, f"no {kind} was created")
                continue
            received = self.receiver.wait_for(f"/astria/{kind}", timeout)
            if received is None:
                self.fail(
                    name,
                    f"no {kind} callback",
                    f"nothing POSTed to the {kind}'s callback URL ({self.callback_base}/astria/"
                    f"{kind}) within {timeout:g} s; if the server cannot reach that address, "
                    "pass --callback-base with one it can",
                )
                continue
            self.check_callback(name, kind, received, expected_id=entity_id)
        fuzzed = self.receiver.matching("/schemathesis/")
        if not fuzzed:
            self.skip("callback_bodies", "no callback arrived from the generated requests")
        for received in fuzzed:
            kind = received.path.rsplit("/", 1)[-1]
            self.check_callback("callback_bodies", kind, received)

    def check_callback(
        self, name: str, kind: str, received: Received, expected_id: int | None = None
    ) -> None:
        where = f"POST {received.path}"
        try:
            body = received.json()
        except ValueError:
            self.fail(name, where, f"the body is not JSON: {received.body[:200]!r}")
            return
        if not received.content_type.startswith(JSON):
            self.fail(
                name, where, f"Content-Type is {received.content_type!r}, not application/json"
            )
            return
        problems = self.schema_problems(ENVELOPES.get(kind, "TuneEnvelope"), body)
        if problems:
            shown = json.dumps(body, ensure_ascii=False)[:SHOWN_CHARS]
            self.fail(
                name,
                f"{where}: not a {ENVELOPES.get(kind)}",
                "; ".join(problems) + f"\nbody: {shown}",
            )
            return
        if expected_id is not None and body[kind]["id"] != expected_id:
            self.fail(name, where, f"{kind}.id is {body[kind]['id']}, expected {expected_id}")
            return
        if kind == "prompt" and expected_id is not None and not body["prompt"]["images"]:
            self.fail(name, where, "the prompt callback came before its images (images is [])")
            return
        self.held(name)

    def check_retry_after(self) -> None:
        name = "retry_after_on_429"
        if not self.enabled:
            return
        result = self.result(name)
        result.findings.extend(self.state.missing_retry_after)
        if self.state.rate_limited == 0:
            result.not_run = f"no 429 in {self.state.responses} answers"
        else:
            result.passed = self.state.rate_limited - len(self.state.missing_retry_after)

    def cleanup(self) -> None:
        for tune_id in list(
            dict.fromkeys(self.state.own_tunes + [t for t in (self.state.home_tune,) if t])
        ):
            exchange = self.client.call("DELETE", f"/tunes/{tune_id}")
            if exchange.status == 200 and not self.schema_problems("Message", exchange.json()):
                self.held("live_cleanup")
            else:
                self.fail(
                    "live_cleanup",
                    f"DELETE /tunes/{tune_id} answered {exchange.status}",
                    exchange.shown(),
                    exchange,
                )


# ---- schemathesis -------------------------------------------------------------------------


def schemathesis_config(options: Options) -> schemathesis.Config:
    phases: dict[str, Any] = {
        name: {"enabled": name in options.phases} for name in SCHEMATHESIS_PHASES
    }
    checks: dict[str, Any] = {"enabled": True}
    if options.live:
        # Other methods on the API's paths could change the account: never sent.
        checks["unsupported_method"] = {"enabled": False}
        phases["coverage"]["unexpected-methods"] = []
    data: dict[str, Any] = {
        "seed": options.seed,
        "base-url": options.base_url,
        "headers": {"Authorization": f"Bearer {options.api_key}"},
        "request-timeout": options.request_timeout,
        "workers": 1,
        "cache": {"enabled": False},
        "generation": {
            "database": "none",  # the same --seed replays the same run
            "max-examples": options.max_examples,
            "mode": "positive" if options.live else "all",
        },
        "checks": checks,
        "phases": phases,
    }
    if options.rate:
        # Also bounds the few requests schemathesis sends around the before_call hook.
        data["rate-limit"] = schemathesis_rate(options.rate)
    return schemathesis.Config.from_dict(data)


def schemathesis_rate(per_second: float) -> str:
    """Requests a second as schemathesis spells a rate: ``2/s``, ``30/m``, ``6/h``."""
    for unit, seconds in (("s", 1), ("m", 60), ("h", 3600)):
        count = float(per_second) * seconds
        if count >= 1 and (count.is_integer() or unit == "h"):
            return f"{max(1, int(count))}/{unit}"
    return "1/h"


def run_schemathesis(
    options: Options,
    report: Report,
    state: RunState,
    limiter: RateLimiter,
    callback_base: str | None,
    document: dict[str, Any],
) -> None:
    # schemathesis rewrites parts of the document it loads (examples become files): a copy.
    loaded = copy.deepcopy(document)
    schema: Any = schemathesis.openapi.from_dict(loaded, config=schemathesis_config(options))
    if options.live:
        schema = schema.include(operation_id=list(LIVE_OPERATIONS))
    fixer = CaseFixer(
        schema,
        state,
        limiter,
        live=options.live,
        callback_base=callback_base,
        example_image_url=_example_image_url(document),
    )
    schema.hooks.register_hook_with_name(fixer.after_call, "after_call")
    equivalence = WireEquivalence(document, state)
    schema.hooks.register_hook_with_name(equivalence.filter_failure, "filter_failure")
    GLOBAL_HOOK_DISPATCHER.register_hook_with_name(fixer.before_call, "before_call")
    try:
        for event in from_schema(schema).execute():
            _consume(event, report)
    finally:
        GLOBAL_HOOK_DISPATCHER.unregister(fixer.before_call)


def _consume(event: events.EngineEvent, report: Report) -> None:
    if isinstance(event, events.ScenarioFinished):
        report.cases[event.phase.value] += len(event.recorder.cases)
        seen: set[tuple[str, str, str]] = set()
        for case_id, nodes in event.recorder.checks.items():
            for node in nodes:
                result = report.check(node.name, node.name.replace("_", " "), "schemathesis")
                info = node.failure_info
                if info is None:
                    result.passed += node.status.value == "success"
                    continue
                failure = info.failure
                key = (node.name, failure.title, failure.message)
                known = {(f.title, f.message) for f in result.findings}
                if key in seen or (failure.title, failure.message) in known:
                    continue
                seen.add(key)
                where = f"{failure.operation or event.recorder.label} ({event.phase.value})"
                message = failure.message
                response = event.recorder.find_response(case_id=case_id)
                if response is not None:
                    text = response.content[:SHOWN_CHARS].decode("utf-8", "replace")
                    message += f"\nanswered {response.status_code}: {text}"
                result.findings.append(Finding(failure.title, message, info.code_sample, where))
    elif isinstance(event, events.NonFatalError):
        report.errors.append(f"{event.label}: {event.info.title}: {event.info.message}")
    elif isinstance(event, events.FatalError):
        report.errors.append(f"schemathesis could not run: {event.exception}")
    elif isinstance(event, events.Interrupted):
        report.errors.append("interrupted")


def _example_image_url(document: dict[str, Any]) -> str:
    example = document["components"]["examples"]["CreateFaceIdTuneJson"]["value"]
    return str(example["tune"]["image_urls"][0])


# ---- the run ------------------------------------------------------------------------------


def check_server(options: Options, out: TextIO | None = None) -> Report:
    """Run everything against ``options.url``; print the summary, write the JUnit XML."""
    out = out or sys.stdout
    started = time.monotonic()
    report = Report(options.seed)
    print(f"astria-mock check-server {options.base_url}", file=out)
    print(
        f"seed: {options.seed} (replay with --seed {options.seed}); "
        f"max examples: {options.max_examples}; phases: {','.join(options.phases)}"
        + ("; --live" if options.live else ""),
        file=out,
        flush=True,
    )
    document = load_document()
    state = RunState()
    limiter = RateLimiter(options.rate)
    receiver = Receiver()
    with receiver.server:
        callback_base = options.callback_base or (None if options.live else receiver.url)
        if callback_base is not None:
            callback_base = callback_base.rstrip("/")
        client = ApiClient(options, state, limiter)
        try:
            astria = AstriaChecks(options, report, client, state, receiver, callback_base, document)
            try:
                astria.setup()
            except httpx.HTTPError as exc:
                report.errors.append(f"{options.base_url} cannot be reached: {exc}")
                return _finish(report, options, started, out)
            if any(phase in options.phases for phase in SCHEMATHESIS_PHASES):
                run_schemathesis(options, report, state, limiter, callback_base, document)
            try:
                astria.after()
            except httpx.HTTPError as exc:
                report.errors.append(f"Astria checks stopped: {type(exc).__name__}: {exc}")
        finally:
            client.close()
    return _finish(report, options, started, out)


def _finish(report: Report, options: Options, started: float, out: TextIO) -> Report:
    report.elapsed = time.monotonic() - started
    print_report(report, out)
    if options.junit_xml is not None:
        write_junit(report, options.junit_xml)
        print(f"JUnit XML: {options.junit_xml}", file=out)
    return report


def _shorten(text: str, limit: int = MAX_SHOWN_LINE) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]} … ({len(text) - limit} more characters in --junit-xml)"


def print_report(report: Report, out: TextIO) -> None:
    cases = ", ".join(
        f"{phase} {report.cases[phase]}" for phase in SCHEMATHESIS_PHASES if phase in report.cases
    )
    for group, title in (("schemathesis", "schemathesis checks"), ("astria", "Astria checks")):
        results = [c for c in report.checks.values() if c.group == group]
        if not results:
            continue
        suffix = f" (cases: {cases})" if group == "schemathesis" and cases else ""
        print(f"\n{title}{suffix}", file=out)
        for result in results:
            detail = (
                f"{len(result.findings)} failure(s)"
                if result.findings
                else result.not_run or f"{result.passed} passed"
            )
            if result.note and not result.findings:
                detail += f"; {result.note}"
            print(f"  {result.status} {result.name}: {detail}", file=out)
    for result in report.failed:
        print(f"\nFAIL {result.name} — {result.description}", file=out)
        for finding in result.findings[:MAX_SHOWN_FINDINGS]:
            where = f" [{finding.where}]" if finding.where else ""
            print(f"  - {finding.title}{where}", file=out)
            for line in finding.message.strip().splitlines():
                print(f"      {_shorten(line)}", file=out)
            if finding.curl:
                print("    reproduce with:", file=out)
                for line in finding.curl.strip().splitlines():
                    print(f"      {_shorten(line)}", file=out)
        hidden = len(result.findings) - MAX_SHOWN_FINDINGS
        if hidden > 0:
            print(f"  … and {hidden} more (see --junit-xml)", file=out)
    for error in report.errors:
        print(f"\nERROR {error}", file=out)
    verdict = (
        "OK: every check held"
        if report.ok
        else (
            f"FAILED: {len(report.failed)} check(s) failed"
            + (f", {len(report.errors)} error(s)" if report.errors else "")
        )
    )
    print(f"\n{verdict} ({report.elapsed:.1f} s, seed {report.seed})", file=out, flush=True)


def _xml(text: str) -> str:
    return NOT_XML.sub("\N{REPLACEMENT CHARACTER}", text)


def write_junit(report: Report, path: Path) -> None:
    root = ET.Element("testsuites", name="astria-mock check-server", time=f"{report.elapsed:.3f}")
    for group in ("schemathesis", "astria"):
        results = [c for c in report.checks.values() if c.group == group]
        suite = ET.SubElement(
            root,
            "testsuite",
            name=group,
            tests=str(len(results)),
            failures=str(sum(r.status == "FAIL" for r in results)),
            skipped=str(sum(r.status == "SKIP" for r in results)),
        )
        for result in results:
            case = ET.SubElement(suite, "testcase", classname=group, name=result.name)
            if result.findings:
                text = "\n\n".join(
                    f"{f.title} {f.where}\n{f.message}\n{f.curl}".strip() for f in result.findings
                )
                ET.SubElement(case, "failure", message=result.description).text = _xml(text)
            elif result.not_run is not None:
                ET.SubElement(case, "skipped", message=result.not_run)
    if report.errors:
        suite = ET.SubElement(
            root,
            "testsuite",
            name="errors",
            tests=str(len(report.errors)),
            errors=str(len(report.errors)),
        )
        for index, error in enumerate(report.errors):
            case = ET.SubElement(suite, "testcase", classname="errors", name=f"error {index + 1}")
            error = _xml(error)
            ET.SubElement(case, "error", message=error.splitlines()[0][:200]).text = error
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
