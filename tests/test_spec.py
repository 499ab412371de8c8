"""The contract, ``openapi.yaml``: valid, lint-clean, its examples valid, its three body
shapes in step, and usable by schemathesis to generate requests for every operation."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema_rs
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from mockserver.contract import follow_refs

ROOT = Path(__file__).resolve().parent.parent
SPEC_PATH = ROOT / "openapi.yaml"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
JSON = "application/json"
MULTIPART = "multipart/form-data"
URLENCODED = "application/x-www-form-urlencoded"
BODY_MEDIA_TYPES = (JSON, MULTIPART, URLENCODED)
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")

# operationId -> (method, path, success status). The server routes by these ids.
OPERATIONS = {
    "createTune": ("post", "/tunes", "201"),
    "listTunes": ("get", "/tunes", "200"),
    "getTune": ("get", "/tunes/{id}", "200"),
    "getTuneJson": ("get", "/tunes/{id}.json", "200"),
    "deleteTune": ("delete", "/tunes/{id}", "200"),
    "createPrompt": ("post", "/tunes/{tune_id}/prompts", "201"),
    "listTunePrompts": ("get", "/tunes/{tune_id}/prompts", "200"),
    "getTunePrompt": ("get", "/tunes/{tune_id}/prompts/{id}", "200"),
    "getTunePromptJson": ("get", "/tunes/{tune_id}/prompts/{id}.json", "200"),
    "deleteTunePrompt": ("delete", "/tunes/{tune_id}/prompts/{id}", "200"),
    "listPrompts": ("get", "/prompts", "200"),
    "getPrompt": ("get", "/prompts/{id}", "200"),
    "getPromptJson": ("get", "/prompts/{id}.json", "200"),
    "deletePrompt": ("delete", "/prompts/{id}", "200"),
    "duplicatePrompt": ("post", "/prompts/{id}/duplicate", "201"),
    "likePrompt": ("post", "/prompts/{id}/likes", "201"),
    "unlikePrompt": ("delete", "/prompts/{id}/likes", "200"),
}
WITH_BODY = ("createTune", "createPrompt", "duplicatePrompt")
LISTS = ("listTunes", "listTunePrompts", "listPrompts")


# ---- helpers over the spec document ------------------------------------------------------


def pointer(*parts: str | int) -> str:
    """A URI-fragment JSON pointer to ``parts`` (``/`` and ``~`` escaped, then percent-encoded)."""
    tokens = (str(p).replace("~", "~0").replace("/", "~1") for p in parts)
    return "#/" + "/".join(quote(t, safe="~!$&'()*+,;=:@") for t in tokens)


resolve = follow_refs


def compile_at(document: dict[str, Any], ref: str) -> jsonschema_rs.Validator:
    """A validator for the schema at ``ref``, its ``$ref`` s resolved inside the document."""
    root = {**document, "$schema": DIALECT, "$ref": ref}
    return jsonschema_rs.Draft202012Validator(root, validate_formats=True, offline=True)


def operation(document: dict[str, Any], operation_id: str) -> dict[str, Any]:
    method, path, _ = OPERATIONS[operation_id]
    node: dict[str, Any] = document["paths"][path][method]
    return node


def body_schema(document: dict[str, Any], operation_id: str, media_type: str) -> dict[str, Any]:
    content = operation(document, operation_id)["requestBody"]["content"]
    schema: dict[str, Any] = resolve(document, content[media_type]["schema"])
    return schema


def branches(document: dict[str, Any], schema: Any) -> Iterator[dict[str, Any]]:
    """The schema and every schema it is ``allOf`` -composed with."""
    schema = resolve(document, schema)
    yield schema
    for sub in schema.get("allOf", []):
        yield from branches(document, sub)


def properties(document: dict[str, Any], schema: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for branch in branches(document, schema):
        merged.update(branch.get("properties", {}))
    return merged


def required_sets(document: dict[str, Any], schema: Any) -> list[frozenset[str]]:
    """The alternative sets of required names: ``required`` plus each ``anyOf`` branch's."""
    base: set[str] = set()
    alternatives: list[set[str]] = []
    for branch in branches(document, schema):
        base.update(branch.get("required", []))
        for option in branch.get("anyOf", []):
            alternatives.append(set(resolve(document, option).get("required", [])))
    return sorted({frozenset(base | alt) for alt in alternatives or [set()]}, key=sorted)


def types(document: dict[str, Any], schema: Any) -> frozenset[str]:
    """The JSON types a schema admits (``allOf`` intersects them)."""
    admitted: set[str] | None = None
    for branch in branches(document, schema):
        kind = branch.get("type")
        if kind is None:
            continue
        here = {kind} if isinstance(kind, str) else set(kind)
        admitted = here if admitted is None else admitted & here
    assert admitted is not None, f"schema without a type: {schema}"
    return frozenset(admitted)


def refs(node: Any) -> set[str]:
    """Every ``$ref`` a schema names directly (components it shares)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                found.add(value)
            else:
                found |= refs(value)
    elif isinstance(node, list):
        for item in node:
            found |= refs(item)
    return found


def is_binary(document: dict[str, Any], schema: Any) -> bool:
    schema = resolve(document, schema)
    if "array" in types(document, schema):
        return is_binary(document, schema["items"])
    return any(b.get("format") == "binary" for b in branches(document, schema))


def example_values(document: dict[str, Any], node: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """The examples of a media type, parameter or header: ``example`` and ``examples``."""
    if "example" in node:
        yield "example", node["example"]
    for name, example in node.get("examples", {}).items():
        yield name, resolve(document, example)["value"]


def all_examples(document: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(where, schema pointer, value) for every example in the document.

    Media types, parameters and headers carry ``example``/``examples`` beside a ``schema``;
    schemas carry a list under ``examples``. ``$ref`` nodes are skipped: their targets are
    visited where they are defined.
    """

    def walk(node: Any, path: tuple[str | int, ...]) -> Iterator[tuple[str, str, Any]]:
        if isinstance(node, list):
            for index, item in enumerate(node):
                yield from walk(item, (*path, index))
            return
        if not isinstance(node, dict) or "$ref" in node:
            return
        where = "/".join(map(str, path))
        if "schema" in node and ("example" in node or isinstance(node.get("examples"), dict)):
            for name, value in example_values(document, node):
                yield f"{where} [{name}]", pointer(*path, "schema"), value
        if isinstance(node.get("examples"), list):
            for index, value in enumerate(node["examples"]):
                yield f"{where} [examples/{index}]", pointer(*path), value
        for key, value in node.items():
            if key not in ("example", "examples"):
                yield from walk(value, (*path, key))

    yield from walk(document, ())


# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec_document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text("utf-8"))
    return document


# ---- 1. the document is a valid OpenAPI 3.1 description ---------------------------------------


def test_spec_is_valid_openapi_3_1(spec_document):
    assert spec_document["openapi"].startswith("3.1.")
    validate(spec_document, cls=OpenAPIV31SpecValidator)


def test_operations_have_the_ids_the_server_routes_by(spec_document):
    found = {
        node["operationId"]: (method, path)
        for path, item in spec_document["paths"].items()
        for method, node in item.items()
        if method in METHODS
    }
    assert found == {op_id: (method, path) for op_id, (method, path, _) in OPERATIONS.items()}
    for op_id, (_, _, status) in OPERATIONS.items():
        responses = operation(spec_document, op_id)["responses"]
        successes = [code for code in responses if code.startswith("2")]
        assert successes == [status], op_id


def test_operations_document_their_errors(spec_document):
    for op_id, (_, path, _) in OPERATIONS.items():
        codes = set(operation(spec_document, op_id)["responses"])
        assert {"401", "429", "500"} <= codes, op_id
        assert ("404" in codes) == ("{" in path), op_id
        if op_id in WITH_BODY:
            assert {"400", "413", "415", "422", "504"} <= codes, op_id
        if op_id in LISTS:
            assert "400" in codes, op_id


def test_security_is_a_global_bearer_key(spec_document):
    assert spec_document["security"] == [{"bearerAuth": []}]
    scheme = spec_document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")


def test_path_parameters_are_positive_integers(spec_document):
    for path, item in spec_document["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        params = [resolve(spec_document, p) for p in item.get("parameters", [])]
        assert {p["name"] for p in params if p["in"] == "path"} == names, path
        for param in params:
            schema = resolve(spec_document, param["schema"])
            assert (schema["type"], schema["minimum"]) == ("integer", 1), path


def test_paging_parameters(spec_document):
    for op_id in LISTS:
        params = {
            p["name"]: resolve(spec_document, p["schema"])
            for p in (
                resolve(spec_document, raw) for raw in operation(spec_document, op_id)["parameters"]
            )
        }
        assert set(params) == {"limit", "before_id", "offset"}, op_id
        assert (params["limit"]["minimum"], params["limit"]["maximum"]) == (1, 120)
        assert params["limit"]["default"] == 20
        assert params["offset"]["default"] == 0
        assert params["offset"]["maximum"] == (200 if op_id == "listTunes" else 10000)


def test_callbacks_post_the_wrapped_entity(spec_document):
    components = spec_document["components"]
    for op_id, wrapper, item in (
        ("createTune", "tune", "TuneCallback"),
        ("createPrompt", "prompt", "PromptCallback"),
        ("duplicatePrompt", "prompt", "PromptCallback"),
    ):
        (callback,) = operation(spec_document, op_id)["callbacks"].values()
        ((expression, path_item),) = resolve(spec_document, callback).items()
        assert expression == f"{{$request.body#/{wrapper}/callback}}"
        assert path_item == {"$ref": f"#/components/pathItems/{item}"}
        assert spec_document["webhooks"][wrapper] == path_item
        body = components["pathItems"][item]["post"]["requestBody"]["content"][JSON]["schema"]
        envelope = resolve(spec_document, body)
        assert envelope["required"] == [wrapper]
        assert envelope["properties"][wrapper]["$ref"] == f"#/components/schemas/{wrapper.title()}"


# ---- 2. the linters ---------------------------------------------------------------------------


def run_node_tool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("npx") is None or not (ROOT / "node_modules" / ".bin" / args[0]).exists():
        pytest.skip(f"{args[0]} is not installed: run `npm ci` in the repository root")
    env = {
        **os.environ,
        "REDOCLY_TELEMETRY": "off",
        "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true",
        "NO_COLOR": "1",
    }
    return subprocess.run(
        ["npx", "--no-install", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_spectral_reports_no_problems():
    result = run_node_tool(
        "spectral", "lint", "openapi.yaml", "--ruleset", ".spectral.yaml", "--fail-severity", "warn"
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_redocly_reports_no_problems():
    result = run_node_tool("redocly", "lint", "openapi.yaml", "--format", "json")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    report = json.loads(result.stdout)
    assert report["totals"]["errors"] == 0, output
    assert report["totals"]["warnings"] == 0, output


# ---- 3. every example validates against its schema -----------------------------------------------


def test_every_example_matches_its_schema(spec_document):
    examples = list(all_examples(spec_document))
    failures = []
    for where, ref, value in examples:
        errors = [e.message for e in compile_at(spec_document, ref).iter_errors(value)]
        if errors:
            failures.append(f"{where}: {errors}")
    assert not failures, "\n".join(failures)
    # Every operation shows its request bodies, in each media type, and its success answer.
    for op_id, (_, _, status) in OPERATIONS.items():
        node = operation(spec_document, op_id)
        for media_type, media in node.get("requestBody", {}).get("content", {}).items():
            assert list(example_values(spec_document, media)), (op_id, media_type)
        success = resolve(spec_document, node["responses"][status])
        for media_type, media in success.get("content", {}).items():
            assert list(example_values(spec_document, media)), (op_id, media_type)
    assert len(examples) > 40


def test_the_example_check_catches_a_wrong_example(spec_document):
    tune = copy.deepcopy(spec_document["components"]["examples"]["FaceIdTune"]["value"])
    validator = compile_at(spec_document, pointer("components", "schemas", "Tune"))
    assert validator.is_valid(tune)
    assert not validator.is_valid({**tune, "branch": "sd99"})
    assert not validator.is_valid({**tune, "created_at": "yesterday"})
    del tune["ckpt_urls"]
    assert not validator.is_valid(tune)


def test_the_seed_faceid_examples_are_there(spec_document):
    examples = spec_document["components"]["examples"]
    tune = examples["FaceIdTune"]["value"]
    assert (tune["model_type"], tune["ckpt_url"], tune["ckpt_urls"]) == ("faceid", None, [])
    assert set(resolve(spec_document, {"$ref": "#/components/schemas/Tune"})["required"]) <= set(
        tune
    )
    prompt = examples["CreateFaceIdPromptJson"]["value"]["prompt"]
    assert prompt["text"].startswith("<faceid:")
    unprocessable = spec_document["components"]["responses"]["UnprocessableEntity"]
    assert unprocessable["content"][JSON]["examples"]["faceid"]["value"] == {
        "base": ["model_type=faceid is not supported. Use a checkpoint instead"]
    }


# ---- 4. the form shapes name exactly the JSON fields ---------------------------------------------

FORM_NAME = re.compile(
    r"^(?:(?P<wrapper>tune|prompt)\[(?P<field>\w+)\])?(?P<array>\[\])?"
    r"(?:\[(?P<sub>\w+)\])?$"
)
WRAPPERS = {"createTune": "tune", "createPrompt": "prompt", "duplicatePrompt": "prompt"}


def form_field(name: str) -> tuple[str, bool, str | None]:
    """``tune[x]`` -> (x, False, None); ``tune[x][]`` -> (x, True, None);
    ``tune[x][][y]`` -> (x, True, y); a bare top-level name stays as it is."""
    match = FORM_NAME.match(name)
    if match is None or match["field"] is None:
        assert re.fullmatch(r"\w+", name), f"not a Rails form name: {name}"
        return name, False, None
    return match["field"], match["array"] is not None, match["sub"]


def json_fields(document: dict[str, Any], op_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fields inside the wrapper, fields beside it) of an operation's JSON body."""
    top = properties(document, body_schema(document, op_id, JSON))
    inner = properties(document, top.pop(WRAPPERS[op_id]))
    return inner, top


def assert_types_agree(document: dict[str, Any], name: str, form: Any, json_: Any) -> None:
    json_types = types(document, json_) - {"null"}
    form_schema = resolve(document, form)
    if json_types == {"boolean"}:
        assert form == {"$ref": "#/components/schemas/FormBoolean"}, name
        boolean = resolve(document, form)
        assert (boolean["type"], boolean["enum"]) == ("string", ["true", "false"])
        return
    if json_types == {"object"}:
        assert form_schema["type"] == "string", name
        assert form_schema["contentMediaType"] == JSON, name
    else:
        assert types(document, form) == json_types, name
    assert refs(form) == refs(json_), f"{name}: form and JSON must share their component schemas"


@pytest.mark.parametrize("op_id", WITH_BODY)
def test_form_shapes_name_exactly_the_json_fields(spec_document, op_id):
    doc = spec_document
    inner, top = json_fields(doc, op_id)
    multipart = properties(doc, body_schema(doc, op_id, MULTIPART))
    urlencoded = properties(doc, body_schema(doc, op_id, URLENCODED))

    named: dict[str, str] = {}
    for name, form in multipart.items():
        field, array, sub = form_field(name)
        fields = inner if name.startswith(WRAPPERS[op_id] + "[") else top
        assert field in fields, f"{name} names no JSON field"
        json_ = resolve(doc, fields[field])
        named[field] = name
        assert array == ("array" in types(doc, json_)), f"{name}: [] must match a JSON array"
        if sub is not None:
            item = properties(doc, json_["items"])
            assert sub in item, f"{name} names no field of {field}[]"
            assert_types_agree(doc, name, resolve(doc, form)["items"], item[sub])
        else:
            assert_types_agree(doc, name, form, fields[field])
    assert set(named) == set(inner) | set(top), "the multipart form must name every JSON field"

    binary = {name for name, schema in multipart.items() if is_binary(doc, schema)}
    assert binary, "multipart carries the files"
    assert set(urlencoded) == set(multipart) - binary, "urlencoded lacks exactly the files"
    for name in urlencoded:
        assert urlencoded[name] == multipart[name], name


@pytest.mark.parametrize("op_id", WITH_BODY)
def test_form_shapes_require_what_json_requires(spec_document, op_id):
    doc = spec_document
    wrapper = WRAPPERS[op_id]
    json_body = body_schema(doc, op_id, JSON)
    inner_schema = properties(doc, json_body)[wrapper]
    inner = required_sets(doc, inner_schema) if wrapper in json_body.get("required", []) else []
    expected = [frozenset(f"{wrapper}[{f}]" for f in alt) for alt in inner] or [frozenset()]

    def normal(alternatives: list[frozenset[str]]) -> list[frozenset[str]]:
        # `tune[x][]` and `tune[x]` name the same field here
        return sorted(
            {frozenset(n.removesuffix("[]") for n in alt) for alt in alternatives}, key=sorted
        )

    multipart = body_schema(doc, op_id, MULTIPART)
    assert normal(required_sets(doc, multipart)) == normal(expected)
    binary = {
        n.removesuffix("[]") for n, s in properties(doc, multipart).items() if is_binary(doc, s)
    }
    without_files = [alt for alt in normal(expected) if not alt & binary]
    assert normal(required_sets(doc, body_schema(doc, op_id, URLENCODED))) == without_files


def test_input_objects_are_closed(spec_document):
    schemas = spec_document["components"]["schemas"]
    closed = {name for name, s in schemas.items() if s.get("additionalProperties") is False}
    closed |= {name for name, s in schemas.items() if s.get("unevaluatedProperties") is False}
    for op_id in WITH_BODY:
        for media_type in BODY_MEDIA_TYPES:
            ref = operation(spec_document, op_id)["requestBody"]["content"][media_type]["schema"]
            assert ref["$ref"].rsplit("/", 1)[1] in closed, (op_id, media_type)
    assert {"TuneInput", "PromptInput", "PromptOverrides", "PromptAttributes"} <= closed
    tune = compile_at(spec_document, pointer("components", "schemas", "TuneInput"))
    good = {"title": "t", "name": "man", "image_urls": ["https://example.com/1.jpg"]}
    assert tune.is_valid(good)
    assert not tune.is_valid({**good, "bogus": 1})
    assert not tune.is_valid({"title": "t", "name": "man"})
    prompt = compile_at(spec_document, pointer("components", "schemas", "PromptAttributes"))
    assert prompt.is_valid({"text": "a", "lora_scale": 0.5})
    assert not compile_at(spec_document, pointer("components", "schemas", "PromptInput")).is_valid(
        {"text": "a", "lora_scale": 0.5}
    )


# ---- 5. schemathesis generates requests for every operation and media type ---------------

EXAMPLES_PER_SHAPE = 5


def only_media_type(document: dict[str, Any], media_type: str) -> dict[str, Any]:
    """A copy of the document whose request bodies offer only ``media_type``."""
    narrowed = copy.deepcopy(document)
    for item in narrowed["paths"].values():
        for method, node in item.items():
            if method in METHODS and "requestBody" in node:
                content = node["requestBody"]["content"]
                node["requestBody"]["content"] = {media_type: content[media_type]}
    return narrowed


def draw_cases(api_operation: Any) -> list[Any]:
    """A few cases for one operation, generated with hypothesis and serialized, never sent."""
    cases: list[Any] = []

    @given(case=api_operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_SHAPE,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def draw(case: Any) -> None:
        # Serialize as if to send: that is where form and file encoding could fail.
        kwargs = case.as_transport_kwargs(base_url="http://127.0.0.1:8000")
        assert kwargs["url"].startswith("http://127.0.0.1:8000/")
        cases.append(case)

    draw()
    return cases


def generate(document: dict[str, Any]) -> Counter[tuple[str, str]]:
    """Cases generated per (operationId, media type) from ``document``."""
    schema = schemathesis.openapi.from_dict(document)
    counts: Counter[tuple[str, str]] = Counter()
    for result in schema.get_all_operations():
        api_operation = result.ok()
        op_id = api_operation.definition.raw["operationId"]
        for case in draw_cases(api_operation):
            counts[(op_id, case.media_type or "-")] += 1
    return counts


def test_schemathesis_generates_every_operation_and_media_type(spec_document, capsys):
    counts: Counter[tuple[str, str]] = Counter()
    for media_type in BODY_MEDIA_TYPES:
        generated = generate(only_media_type(spec_document, media_type))
        for (op_id, generated_type), count in generated.items():
            if op_id in WITH_BODY:
                assert generated_type == media_type, op_id
                counts[(op_id, media_type)] += count
            elif media_type == JSON:  # bodyless operations: count them once
                counts[(op_id, generated_type)] += count

    expected = {(op_id, "-") for op_id in OPERATIONS if op_id not in WITH_BODY}
    expected |= {(op_id, media_type) for op_id in WITH_BODY for media_type in BODY_MEDIA_TYPES}
    assert set(counts) == expected
    assert all(count >= 1 for count in counts.values()), counts
    with capsys.disabled():
        print("\nschemathesis cases generated (operationId, media type: count):")
        for (op_id, media_type), count in sorted(counts.items()):
            print(f"  {op_id:18} {media_type:34} {count}")
