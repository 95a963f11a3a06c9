"""coglet._schema.generate: the OpenAPI document built from a predictor's signature when
no `.cog/openapi_schema.json` is bundled.

Expected documents are written out by hand in the shape `cog build` bundles (OpenAPI
3.0.2, `Input`/`Output` components, enum components named after the field, ...). No
server is started: these tests load predictors in-process.
"""

import copy
import importlib
import importlib.util
import inspect
import json
import os
import sys
import textwrap
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "coglet", "_schema.py")


def _import_schema_module():
    """coglet._schema from this source tree (it needs only the stdlib and cog), else the
    installed one."""
    if os.path.exists(SOURCE):
        import coglet  # the installed package (cog imports it anyway)

        spec = importlib.util.spec_from_file_location("coglet._schema", SOURCE)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["coglet._schema"] = mod
        spec.loader.exec_module(mod)
        coglet._schema = mod
        return mod
    return importlib.import_module("coglet._schema")


_schema = _import_schema_module()

from cog.predictor import load_predictor_from_ref  # noqa: E402

_counter = [0]


def load(tmp_path, src, ref="Predictor"):
    """Write `src` to a fresh module and load `ref` from it as the worker does."""
    _counter[0] += 1
    name = f"schema_gen_pred_{_counter[0]}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(src))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_predictor_from_ref(f"{path}:{ref}")


def method_of(p):
    """The run/predict method the worker would call (the function itself for functions)."""
    if inspect.isfunction(p):
        return p
    for c in type(p).__mro__:
        if c.__module__.startswith("cog."):
            break
        if "run" in c.__dict__:
            return p.run
        if "predict" in c.__dict__:
            return p.predict
    return p.run


def gen(p, **kw):
    doc = _schema.generate(p, method_of(p), **kw)
    json.dumps(doc)  # always serializable
    return doc


@pytest.fixture
def no_cog(monkeypatch):
    """Pretend the cog SDK is not importable: plain type hints only."""
    monkeypatch.setattr(_schema, "_cog", lambda: None)


S = "#/components/schemas/"


def ref(name):
    return {"$ref": S + name}


# ---------------------------------------------------------------------------
# the whole document, for the example predictor
# ---------------------------------------------------------------------------

_OK = "Successful Response"
_VALIDATION = {
    "description": "Validation Error",
    "content": {"application/json": {"schema": ref("HTTPValidationError")}},
}
_PREFER = {"required": False, "schema": {"title": "Prefer", "type": "string"}, "name": "prefer", "in": "header"}


def _ok(schema):
    return {"description": _OK, "content": {"application/json": {"schema": schema}}}


EXPECTED_PATHS = {
    "/": {"get": {"summary": "Root", "operationId": "root__get", "responses": {"200": _ok({"title": "Response Root  Get"})}}},
    "/health-check": {
        "get": {
            "summary": "Healthcheck",
            "operationId": "healthcheck_health_check_get",
            "responses": {"200": _ok({"title": "Response Healthcheck Health Check Get"})},
        }
    },
    "/predictions": {
        "post": {
            "summary": "Predict",
            "description": "Run a single prediction on the model",
            "operationId": "predict_predictions_post",
            "parameters": [_PREFER],
            "requestBody": {"content": {"application/json": {"schema": ref("PredictionRequest")}}},
            "responses": {"200": _ok(ref("PredictionResponse")), "422": _VALIDATION},
        }
    },
    "/predictions/{prediction_id}": {
        "put": {
            "summary": "Predict Idempotent",
            "description": "Run a single prediction on the model (idempotent creation).",
            "operationId": "predict_idempotent_predictions__prediction_id__put",
            "parameters": [
                {"required": True, "schema": {"title": "Prediction ID", "type": "string"}, "name": "prediction_id", "in": "path"},
                _PREFER,
            ],
            "requestBody": {
                "content": {"application/json": {"schema": {"title": "Prediction Request", "allOf": [ref("PredictionRequest")]}}},
                "required": True,
            },
            "responses": {"200": _ok(ref("PredictionResponse")), "422": _VALIDATION},
        }
    },
    "/predictions/{prediction_id}/cancel": {
        "post": {
            "summary": "Cancel",
            "description": "Cancel a running prediction",
            "operationId": "cancel_predictions__prediction_id__cancel_post",
            "parameters": [
                {"required": True, "schema": {"title": "Prediction ID", "type": "string"}, "name": "prediction_id", "in": "path"}
            ],
            "responses": {"200": _ok({"title": "Response Cancel Predictions  Prediction Id  Cancel Post"}), "422": _VALIDATION},
        }
    },
    "/shutdown": {
        "post": {
            "summary": "Start Shutdown",
            "operationId": "start_shutdown_shutdown_post",
            "responses": {"200": _ok({"title": "Response Start Shutdown Shutdown Post"})},
        }
    },
}


def _request(title, input_name):
    return {
        "title": title,
        "type": "object",
        "properties": {
            "input": ref(input_name),
            "id": {"title": "Id", "type": "string"},
            "created_at": {"title": "Created At", "type": "string", "format": "date-time"},
            "context": {"title": "Context", "type": "object", "additionalProperties": {"type": "string"}},
            "output_file_prefix": {"title": "Output File Prefix", "type": "string"},
            "webhook": {"title": "Webhook", "maxLength": 65536, "minLength": 1, "type": "string", "format": "uri"},
            "webhook_events_filter": {
                "type": "array",
                "items": ref("WebhookEvent"),
                "default": ["start", "output", "logs", "completed"],
            },
        },
    }


def _response(title, input_name, output_name):
    return {
        "title": title,
        "type": "object",
        "properties": {
            "input": ref(input_name),
            "output": ref(output_name),
            "id": {"title": "Id", "type": "string"},
            "version": {"title": "Version", "type": "string"},
            "created_at": {"title": "Created At", "type": "string", "format": "date-time"},
            "started_at": {"title": "Started At", "type": "string", "format": "date-time"},
            "completed_at": {"title": "Completed At", "type": "string", "format": "date-time"},
            "logs": {"title": "Logs", "type": "string", "default": ""},
            "error": {"title": "Error", "type": "string"},
            "status": ref("Status"),
            "metrics": {"title": "Metrics", "type": "object"},
        },
    }


EXPECTED_FIXED_COMPONENTS = {
    "PredictionRequest": _request("PredictionRequest", "Input"),
    "PredictionResponse": _response("PredictionResponse", "Input", "Output"),
    "Status": {
        "title": "Status",
        "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
        "type": "string",
        "description": "An enumeration.",
    },
    "WebhookEvent": {
        "title": "WebhookEvent",
        "enum": ["start", "output", "logs", "completed"],
        "type": "string",
        "description": "An enumeration.",
    },
    "HTTPValidationError": {
        "title": "HTTPValidationError",
        "type": "object",
        "properties": {"detail": {"title": "Detail", "type": "array", "items": ref("ValidationError")}},
    },
    "ValidationError": {
        "title": "ValidationError",
        "required": ["loc", "msg", "type"],
        "type": "object",
        "properties": {
            "loc": {"title": "Location", "type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
            "msg": {"title": "Message", "type": "string"},
            "type": {"title": "Error Type", "type": "string"},
        },
    },
}

EXAMPLE_INPUT = {
    "title": "Input",
    "type": "object",
    "properties": {
        "text": {"title": "Text", "type": "string", "description": "Who to greet", "default": "world", "x-order": 0},
        "repeat": {
            "title": "Repeat",
            "type": "integer",
            "description": "How many times",
            "default": 1,
            "minimum": 1,
            "maximum": 10,
            "x-order": 1,
        },
    },
}


def _example():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_predictor_from_ref(os.path.join(ROOT, "examples", "predict.py") + ":Predictor")


def test_example_predictor_whole_document():
    p = _example()
    doc = _schema.generate(p, p.predict)
    expected = {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": EXPECTED_PATHS,
        "components": {
            "schemas": {
                "Input": EXAMPLE_INPUT,
                "Output": {"title": "Output", "type": "string"},
                **EXPECTED_FIXED_COMPONENTS,
            }
        },
    }
    assert doc == expected
    # no training routes or components without a train method, no streaming mark
    assert not any(k.startswith("/trainings") for k in doc["paths"])
    assert "x-cog-streaming" not in doc["paths"]["/predictions"]["post"]


def test_example_predictor_without_cog_introspection(no_cog):
    p = _example()
    doc = _schema.generate(p, p.predict)
    assert doc["components"]["schemas"]["Input"] == EXAMPLE_INPUT
    assert doc["components"]["schemas"]["Output"] == {"title": "Output", "type": "string"}


def test_method_found_when_not_given():
    p = _example()
    assert _schema.generate(p, None)["components"]["schemas"]["Input"] == EXAMPLE_INPUT


# ---------------------------------------------------------------------------
# every input type
# ---------------------------------------------------------------------------

EVERYTHING = '''
from typing import List, Optional, Union
from cog import BaseRunner, File, Input, Path, Secret


class Predictor(BaseRunner):
    def setup(self) -> None:
        pass

    def run(
        self,
        prompt: str = Input(description="The prompt", min_length=1, max_length=100),
        code: str = Input(default="ab12", regex=r"^[a-z]+[0-9]+$"),
        max_tokens: int = Input(description="Max tokens", default=128, ge=1, le=4096),
        temperature: float = Input(default=0.75, ge=0.0, le=2.0),
        enabled: bool = False,
        image: Path = Input(description="An image"),
        doc: Optional[File] = Input(description="A file (deprecated type)"),
        images: List[Path] = Input(description="Images"),
        api_key: Secret = Input(description="API key"),
        negative_prompt: Optional[str] = Input(default=None, description="What to avoid"),
        seed: Optional[int] = None,
        color: str = Input(choices=["red", "green", "blue"], default="red", description="A color"),
        steps: int = Input(choices=[10, 20, 50], default=20),
        old_flag: str = Input(default="x", deprecated=True, description="Do not use"),
        tags: list[str] = Input(default=["a", "b"], description="Tags"),
        scales: Optional[list[float]] = Input(description="Scales", ge=0, le=1),
        weights: Path = Input(default="https://example.com/w.bin"),
        number_or_text: Union[int, str] = 3,
        plain: str = "plain default",
    ) -> Path:
        return image
'''

EVERYTHING_INPUT = {
    "title": "Input",
    "type": "object",
    "required": ["prompt", "image", "images", "api_key"],
    "properties": {
        "prompt": {
            "title": "Prompt",
            "type": "string",
            "description": "The prompt",
            "minLength": 1,
            "maxLength": 100,
            "x-order": 0,
        },
        "code": {"title": "Code", "type": "string", "default": "ab12", "pattern": "^[a-z]+[0-9]+$", "x-order": 1},
        "max_tokens": {
            "title": "Max Tokens",
            "type": "integer",
            "description": "Max tokens",
            "default": 128,
            "minimum": 1,
            "maximum": 4096,
            "x-order": 2,
        },
        "temperature": {"title": "Temperature", "type": "number", "default": 0.75, "minimum": 0, "maximum": 2, "x-order": 3},
        "enabled": {"title": "Enabled", "type": "boolean", "default": False, "x-order": 4},
        "image": {"title": "Image", "type": "string", "format": "uri", "description": "An image", "x-order": 5},
        "doc": {
            "title": "Doc",
            "type": "string",
            "format": "uri",
            "nullable": True,
            "description": "A file (deprecated type)",
            "x-order": 6,
        },
        "images": {
            "title": "Images",
            "type": "array",
            "items": {"type": "string", "format": "uri"},
            "description": "Images",
            "x-order": 7,
        },
        "api_key": {
            "title": "Api Key",
            "type": "string",
            "format": "password",
            "writeOnly": True,
            "x-cog-secret": True,
            "description": "API key",
            "x-order": 8,
        },
        "negative_prompt": {
            "title": "Negative Prompt",
            "type": "string",
            "nullable": True,
            "description": "What to avoid",
            "x-order": 9,
        },
        "seed": {"title": "Seed", "type": "integer", "nullable": True, "x-order": 10},
        "color": {"allOf": [ref("color")], "description": "A color", "default": "red", "x-order": 11},
        "steps": {"allOf": [ref("steps")], "default": 20, "x-order": 12},
        "old_flag": {
            "title": "Old Flag",
            "type": "string",
            "description": "Do not use",
            "default": "x",
            "deprecated": True,
            "x-order": 13,
        },
        "tags": {
            "title": "Tags",
            "type": "array",
            "items": {"type": "string"},
            "description": "Tags",
            "default": ["a", "b"],
            "x-order": 14,
        },
        "scales": {
            "title": "Scales",
            "type": "array",
            "items": {"type": "number", "minimum": 0, "maximum": 1},
            "nullable": True,
            "description": "Scales",
            "x-order": 15,
        },
        "weights": {
            "title": "Weights",
            "type": "string",
            "format": "uri",
            "default": "https://example.com/w.bin",
            "x-order": 16,
        },
        "number_or_text": {
            "title": "Number Or Text",
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "default": 3,
            "x-order": 17,
        },
        "plain": {"title": "Plain", "type": "string", "default": "plain default", "x-order": 18},
    },
}

EVERYTHING_ENUMS = {
    "color": {"title": "color", "description": "An enumeration.", "enum": ["red", "green", "blue"], "type": "string"},
    "steps": {"title": "steps", "description": "An enumeration.", "enum": [10, 20, 50], "type": "integer"},
}


def test_every_input_type(tmp_path):
    doc = gen(load(tmp_path, EVERYTHING))
    schemas = doc["components"]["schemas"]
    assert schemas["Input"] == EVERYTHING_INPUT
    assert list(schemas["Input"]["properties"]) == list(EVERYTHING_INPUT["properties"])  # x-order order
    assert schemas["Output"] == {"title": "Output", "type": "string", "format": "uri"}
    for name, enum in EVERYTHING_ENUMS.items():
        assert schemas[name] == enum
    expected_names = {"Input", "Output", *EVERYTHING_ENUMS, *EXPECTED_FIXED_COMPONENTS}
    assert set(schemas) == expected_names


def test_every_input_type_goes_through_cogs_inspector(tmp_path):
    """With cog installed, its inspector accepts this signature (so the test above pins
    the cog path; the one below the plain-type-hints path)."""
    p = load(tmp_path, EVERYTHING)
    info = _schema._cog_info(p.run, _schema._cog())
    assert list(info.inputs) == list(EVERYTHING_INPUT["properties"])


def test_every_input_type_without_cog_introspection(tmp_path, no_cog):
    """Plain type hints give the very same components."""
    doc = gen(load(tmp_path, EVERYTHING))
    schemas = doc["components"]["schemas"]
    assert schemas["Input"] == EVERYTHING_INPUT
    assert schemas["Output"] == {"title": "Output", "type": "string", "format": "uri"}
    for name, enum in EVERYTHING_ENUMS.items():
        assert schemas[name] == enum


LITERALS = '''
import enum
from typing import Literal, Optional
from cog import BaseRunner, Input


class Size(str, enum.Enum):
    SMALL = "small"
    LARGE = "large"


class Predictor(BaseRunner):
    def run(
        self,
        mode: Literal["fast", "slow"] = "fast",
        level: Literal[1, 2, 3] = Input(description="Level"),
        size: Size = Size.SMALL,
        maybe: Optional[Literal["a", "b"]] = None,
        modes: list[Literal["x", "y"]] = Input(default=["x"]),
    ) -> str:
        return mode
'''


@pytest.mark.parametrize("with_cog", [True, False])
def test_literal_and_enum_become_choices(tmp_path, monkeypatch, with_cog):
    # cog's inspector refuses Literal/Enum annotations: plain type hints take over
    if not with_cog:
        monkeypatch.setattr(_schema, "_cog", lambda: None)
    schemas = gen(load(tmp_path, LITERALS))["components"]["schemas"]
    assert schemas["Input"] == {
        "title": "Input",
        "type": "object",
        "required": ["level"],
        "properties": {
            "mode": {"allOf": [ref("mode")], "default": "fast", "x-order": 0},
            "level": {"allOf": [ref("level")], "description": "Level", "x-order": 1},
            "size": {"allOf": [ref("size")], "default": "small", "x-order": 2},
            "maybe": {"allOf": [ref("maybe")], "nullable": True, "x-order": 3},
            "modes": {"title": "Modes", "type": "array", "items": ref("modes"), "default": ["x"], "x-order": 4},
        },
    }
    assert schemas["mode"] == {"title": "mode", "description": "An enumeration.", "enum": ["fast", "slow"], "type": "string"}
    assert schemas["level"] == {"title": "level", "description": "An enumeration.", "enum": [1, 2, 3], "type": "integer"}
    assert schemas["size"] == {"title": "size", "description": "An enumeration.", "enum": ["small", "large"], "type": "string"}
    assert schemas["maybe"] == {"title": "maybe", "description": "An enumeration.", "enum": ["a", "b"], "type": "string"}
    assert schemas["modes"] == {"title": "modes", "description": "An enumeration.", "enum": ["x", "y"], "type": "string"}
    assert schemas["Output"] == {"title": "Output", "type": "string"}


# ---------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------

ITERATOR = '''
from typing import AsyncIterator, Iterator
import cog
from cog import BaseRunner, Input


class Predictor(BaseRunner):
    def run(self, prompt: str, n: int = 3) -> Iterator[str]:
        for _ in range(n):
            yield prompt
'''

STREAMING_ITERATOR = '''
from typing import Iterator
import cog
from cog import BaseRunner


class Predictor(BaseRunner):
    @cog.streaming
    def run(self, prompt: str) -> Iterator[str]:
        yield prompt
'''

STREAMING_ASYNC = '''
from typing import AsyncIterator
from cog import BaseRunner, streaming


class Predictor(BaseRunner):
    @streaming()
    async def run(self, prompt: str) -> AsyncIterator[str]:
        yield prompt
'''

CONCAT = '''
from cog import BaseRunner, ConcatenateIterator, Input


class Predictor(BaseRunner):
    def run(self, prompt: str = Input(description="Prompt")) -> ConcatenateIterator[str]:
        for w in prompt.split():
            yield w + " "
'''

ASYNC_CONCAT = '''
from cog import AsyncConcatenateIterator, BaseRunner


class Predictor(BaseRunner):
    async def run(self, prompt: str) -> AsyncConcatenateIterator[str]:
        yield prompt
'''

ITER_OUTPUT = {"title": "Output", "type": "array", "items": {"type": "string"}, "x-cog-array-type": "iterator"}
CONCAT_OUTPUT = {
    "title": "Output",
    "type": "array",
    "items": {"type": "string"},
    "x-cog-array-type": "iterator",
    "x-cog-array-display": "concatenate",
}


@pytest.mark.parametrize("with_cog", [True, False])
def test_iterator_output(tmp_path, monkeypatch, with_cog):
    if not with_cog:
        monkeypatch.setattr(_schema, "_cog", lambda: None)
    doc = gen(load(tmp_path, ITERATOR))
    schemas = doc["components"]["schemas"]
    assert schemas["Output"] == ITER_OUTPUT
    assert schemas["Input"] == {
        "title": "Input",
        "type": "object",
        "required": ["prompt"],
        "properties": {
            "prompt": {"title": "Prompt", "type": "string", "x-order": 0},
            "n": {"title": "N", "type": "integer", "default": 3, "x-order": 1},
        },
    }
    # an iterator alone does not mark the predictor as streaming
    assert "x-cog-streaming" not in doc["paths"]["/predictions"]["post"]


@pytest.mark.parametrize("src", [STREAMING_ITERATOR, STREAMING_ASYNC], ids=["cog.streaming", "streaming()"])
def test_streaming_decorator_marks_predictions_route(tmp_path, src):
    doc = gen(load(tmp_path, src))
    assert doc["paths"]["/predictions"]["post"]["x-cog-streaming"] is True
    assert doc["components"]["schemas"]["Output"] == ITER_OUTPUT
    assert gen(load(tmp_path, src), streaming=False)["paths"]["/predictions"]["post"].get("x-cog-streaming") is None


def test_streaming_forced(tmp_path):
    doc = gen(load(tmp_path, ITERATOR), streaming=True)
    assert doc["paths"]["/predictions"]["post"]["x-cog-streaming"] is True
    assert "x-cog-streaming" not in doc["paths"]["/predictions/{prediction_id}"]["put"]


@pytest.mark.parametrize("src", [CONCAT, ASYNC_CONCAT], ids=["sync", "async"])
@pytest.mark.parametrize("with_cog", [True, False])
def test_concatenate_iterator_output(tmp_path, monkeypatch, src, with_cog):
    if not with_cog:
        monkeypatch.setattr(_schema, "_cog", lambda: None)
    schemas = gen(load(tmp_path, src))["components"]["schemas"]
    assert schemas["Output"] == CONCAT_OUTPUT


OUTPUTS = '''
from typing import Any, Optional
from cog import BaseModel, BaseRunner, Path


class Result(BaseModel):
    text: str
    score: float
    mask: Optional[Path]
    tags: list[str]


class ListPaths(BaseRunner):
    def run(self, n: int) -> list[Path]:
        return []


class Structured(BaseRunner):
    def run(self, n: int) -> Result:
        return Result(text="", score=0.0, mask=None, tags=[])


class Anything(BaseRunner):
    def run(self, n: int) -> Any:
        return n


class Flag(BaseRunner):
    def run(self, n: int) -> bool:
        return True
'''


@pytest.mark.parametrize(
    "ref_name,expected",
    [
        ("ListPaths", {"title": "Output", "type": "array", "items": {"type": "string", "format": "uri"}}),
        (
            "Structured",
            {
                "title": "Output",
                "type": "object",
                "properties": {
                    "text": {"title": "Text", "type": "string"},
                    "score": {"title": "Score", "type": "number"},
                    "mask": {"title": "Mask", "type": "string", "format": "uri", "nullable": True},
                    "tags": {"title": "Tags", "type": "array", "items": {"type": "string"}},
                },
                "required": ["text", "score", "tags"],
            },
        ),
        ("Anything", {"title": "Output"}),
        ("Flag", {"title": "Output", "type": "boolean"}),
    ],
)
@pytest.mark.parametrize("with_cog", [True, False])
def test_other_outputs(tmp_path, monkeypatch, capsys, ref_name, expected, with_cog):
    if not with_cog:
        monkeypatch.setattr(_schema, "_cog", lambda: None)
    schemas = gen(load(tmp_path, OUTPUTS, ref=ref_name))["components"]["schemas"]
    assert schemas["Output"] == expected
    assert capsys.readouterr().out == ""  # cog's `-> Any` warning kept off stdout


# ---------------------------------------------------------------------------
# predictors that don't use cog at all
# ---------------------------------------------------------------------------

PLAIN_CLASS = '''
from typing import Optional


class Predictor:
    def setup(self):
        self.ready = True

    def predict(
        self,
        text: str,
        count: int = 2,
        ratio: float = 0.5,
        loud: bool = True,
        names: list[str] = ["x"],
        note: Optional[str] = None,
        meta: dict = {"k": 1},
    ) -> list[str]:
        return [text] * count
'''

PLAIN_CLASS_INPUT = {
    "title": "Input",
    "type": "object",
    "required": ["text"],
    "properties": {
        "text": {"title": "Text", "type": "string", "x-order": 0},
        "count": {"title": "Count", "type": "integer", "default": 2, "x-order": 1},
        "ratio": {"title": "Ratio", "type": "number", "default": 0.5, "x-order": 2},
        "loud": {"title": "Loud", "type": "boolean", "default": True, "x-order": 3},
        "names": {"title": "Names", "type": "array", "items": {"type": "string"}, "default": ["x"], "x-order": 4},
        "note": {"title": "Note", "type": "string", "nullable": True, "x-order": 5},
        "meta": {"title": "Meta", "type": "object", "default": {"k": 1}, "x-order": 6},
    },
}


@pytest.mark.parametrize("with_cog", [True, False])
def test_plain_class_with_type_hints_only(tmp_path, monkeypatch, with_cog):
    if not with_cog:
        monkeypatch.setattr(_schema, "_cog", lambda: None)
    p = load(tmp_path, PLAIN_CLASS)
    schemas = _schema.generate(p, p.predict)["components"]["schemas"]
    assert schemas["Input"] == PLAIN_CLASS_INPUT
    assert schemas["Output"] == {"title": "Output", "type": "array", "items": {"type": "string"}}


def test_postponed_annotations(tmp_path):
    """`from __future__ import annotations` (string annotations) resolves the same."""
    p = load(tmp_path, "from __future__ import annotations\n" + textwrap.dedent(PLAIN_CLASS))
    schemas = _schema.generate(p, p.predict)["components"]["schemas"]
    assert schemas["Input"] == PLAIN_CLASS_INPUT
    assert schemas["Output"] == {"title": "Output", "type": "array", "items": {"type": "string"}}


UNANNOTATED = '''
class Predictor:
    def predict(self, text, count=3):
        return text
'''


def test_unannotated_class_still_gives_a_schema(tmp_path):
    """cog refuses it (no annotations): the schema says what is known, and accepts anything."""
    p = load(tmp_path, UNANNOTATED)
    schemas = _schema.generate(p, p.predict)["components"]["schemas"]
    assert schemas["Input"] == {
        "title": "Input",
        "type": "object",
        "required": ["text"],
        "properties": {
            "text": {"title": "Text", "x-order": 0},
            "count": {"title": "Count", "default": 3, "x-order": 1},
        },
    }
    assert schemas["Output"] == {"title": "Output"}


FUNCTION = '''
from cog import Input, Path


def predict(
    prompt: str = Input(description="What to draw"),
    width: int = Input(default=512, ge=64, le=1024),
) -> Path:
    return Path("/tmp/out.png")
'''

FUNCTION_INPUT = {
    "title": "Input",
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "prompt": {"title": "Prompt", "type": "string", "description": "What to draw", "x-order": 0},
        "width": {"title": "Width", "type": "integer", "default": 512, "minimum": 64, "maximum": 1024, "x-order": 1},
    },
}


@pytest.mark.parametrize("with_cog", [True, False])
def test_standalone_function_predictor(tmp_path, monkeypatch, with_cog):
    if not with_cog:
        monkeypatch.setattr(_schema, "_cog", lambda: None)
    fn = load(tmp_path, FUNCTION, ref="predict")
    doc = _schema.generate(fn, fn)
    schemas = doc["components"]["schemas"]
    assert schemas["Input"] == FUNCTION_INPUT
    assert schemas["Output"] == {"title": "Output", "type": "string", "format": "uri"}


DECORATED = '''
import functools
from cog import BaseRunner


def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper


def bare(fn):
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper


class Predictor(BaseRunner):
    @bare
    @logged
    def run(self, prompt: str, k: int = 1) -> str:
        return prompt
'''


def test_decorated_run_is_unwrapped(tmp_path):
    schemas = gen(load(tmp_path, DECORATED))["components"]["schemas"]
    assert schemas["Input"]["required"] == ["prompt"]
    assert schemas["Input"]["properties"]["k"] == {"title": "K", "type": "integer", "default": 1, "x-order": 1}
    assert schemas["Output"] == {"title": "Output", "type": "string"}


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------

TRAIN = '''
from typing import Optional
from cog import BaseModel, BaseRunner, Input, Path


class TrainingOutput(BaseModel):
    weights: Path
    loss: Optional[float]


class Predictor(BaseRunner):
    def run(self, prompt: str, color: str = Input(default="red", choices=["red", "blue"])) -> str:
        return prompt


def train(
    dataset: Path = Input(description="Training data"),
    epochs: int = Input(default=3, ge=1, description="Epochs"),
    color: str = Input(default="blue", choices=["blue", "green"]),
) -> TrainingOutput:
    return TrainingOutput(weights=Path("/tmp/w"), loss=None)
'''


def _train_components():
    return {
        "TrainingInput": {
            "title": "TrainingInput",
            "type": "object",
            "required": ["dataset"],
            "properties": {
                "dataset": {"title": "Dataset", "type": "string", "format": "uri", "description": "Training data", "x-order": 0},
                "epochs": {"title": "Epochs", "type": "integer", "description": "Epochs", "default": 3, "minimum": 1, "x-order": 1},
                # `color` is already the prediction enum's name: the training one gets its own
                "color": {"allOf": [ref("TrainingInputColor")], "default": "blue", "x-order": 2},
            },
        },
        "TrainingOutput": {
            "title": "TrainingOutput",
            "type": "object",
            "properties": {
                "weights": {"title": "Weights", "type": "string", "format": "uri"},
                "loss": {"title": "Loss", "type": "number", "nullable": True},
            },
            "required": ["weights"],
        },
        "TrainingInputColor": {"title": "color", "description": "An enumeration.", "enum": ["blue", "green"], "type": "string"},
        "TrainingRequest": _request("TrainingRequest", "TrainingInput"),
        "TrainingResponse": _response("TrainingResponse", "TrainingInput", "TrainingOutput"),
    }


TRAIN_PATHS = {
    "/trainings": {
        "post": {
            "summary": "Train",
            "operationId": "train_trainings_post",
            "parameters": [_PREFER],
            "requestBody": {"content": {"application/json": {"schema": ref("TrainingRequest")}}},
            "responses": {"200": _ok(ref("TrainingResponse")), "422": _VALIDATION},
        }
    },
    "/trainings/{training_id}": {
        "put": {
            "summary": "Train Idempotent",
            "operationId": "train_idempotent_trainings__training_id__put",
            "parameters": [
                {"required": True, "schema": {"title": "Training ID", "type": "string"}, "name": "training_id", "in": "path"},
                _PREFER,
            ],
            "requestBody": {
                "content": {"application/json": {"schema": {"title": "Training Request", "allOf": [ref("TrainingRequest")]}}},
                "required": True,
            },
            "responses": {"200": _ok(ref("TrainingResponse")), "422": _VALIDATION},
        }
    },
    "/trainings/{training_id}/cancel": {
        "post": {
            "summary": "Cancel Training",
            "operationId": "cancel_training_trainings__training_id__cancel_post",
            "parameters": [
                {"required": True, "schema": {"title": "Training ID", "type": "string"}, "name": "training_id", "in": "path"}
            ],
            "responses": {"200": _ok({"title": "Response Cancel Training Trainings  Training Id  Cancel Post"}), "422": _VALIDATION},
        }
    },
}


@pytest.mark.parametrize("with_cog", [True, False])
def test_train_method(tmp_path, monkeypatch, with_cog):
    if not with_cog:
        monkeypatch.setattr(_schema, "_cog", lambda: None)
    p = load(tmp_path, TRAIN)
    train = sys.modules[type(p).__module__].train
    doc = _schema.generate(p, p.run, train_method=train)
    schemas = doc["components"]["schemas"]
    for name, expected in _train_components().items():
        assert schemas[name] == expected, name
    assert schemas["Input"]["properties"]["color"] == {"allOf": [ref("color")], "default": "red", "x-order": 1}
    assert schemas["color"]["enum"] == ["red", "blue"]
    assert schemas["Output"] == {"title": "Output", "type": "string"}
    assert doc["paths"] == {**EXPECTED_PATHS, **TRAIN_PATHS}


def test_bound_train_method(tmp_path):
    src = '''
    from cog import BaseRunner, Input

    class Predictor(BaseRunner):
        def run(self, x: int) -> int:
            return x

        def train(self, steps: int = Input(default=10, le=100)) -> str:
            return "done"
    '''
    p = load(tmp_path, src)
    schemas = _schema.generate(p, p.run, train_method=p.train)["components"]["schemas"]
    assert schemas["TrainingInput"] == {
        "title": "TrainingInput",
        "type": "object",
        "properties": {"steps": {"title": "Steps", "type": "integer", "default": 10, "maximum": 100, "x-order": 0}},
    }
    assert schemas["TrainingOutput"] == {"title": "TrainingOutput", "type": "string"}


# ---------------------------------------------------------------------------
# the Input components validate (jsonschema, when installed)
# ---------------------------------------------------------------------------


def _inline(node, schemas, depth=0):
    """Inline `#/components/schemas/X` refs, as the server does before compiling."""
    if depth > 20:
        return node
    if isinstance(node, dict):
        r = node.get("$ref")
        if isinstance(r, str) and r.startswith(S) and r[len(S):] in schemas:
            rest = {k: v for k, v in node.items() if k != "$ref"}
            target = _inline(copy.deepcopy(schemas[r[len(S):]]), schemas, depth + 1)
            target.update(_inline(rest, schemas, depth + 1))
            return target
        return {k: _inline(v, schemas, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, schemas, depth) for v in node]
    return node


CASES = [
    (
        "everything",
        EVERYTHING,
        "Predictor",
        {"prompt": "hi", "image": "https://x/y.png", "images": [], "api_key": "s3cret", "color": "blue", "steps": 50,
         "number_or_text": "three", "scales": [0.5]},
        [
            {"image": "https://x/y.png", "images": [], "api_key": "k"},  # prompt missing
            {"prompt": "", "image": "a", "images": [], "api_key": "k"},  # too short
            {"prompt": "hi", "image": "a", "images": [], "api_key": "k", "max_tokens": 0},  # < ge
            {"prompt": "hi", "image": "a", "images": [], "api_key": "k", "color": "pink"},  # not a choice
            {"prompt": "hi", "image": "a", "images": [], "api_key": "k", "code": "AB"},  # regex
            {"prompt": "hi", "image": "a", "images": [], "api_key": "k", "scales": [2]},  # item > le
            {"prompt": "hi", "image": "a", "images": [], "api_key": "k", "number_or_text": 1.5},  # no variant
        ],
    ),
    ("example", None, None, {"text": "you", "repeat": 10}, [{"repeat": 11}, {"text": 3}]),
    ("literals", LITERALS, "Predictor", {"level": 2, "modes": ["y", "x"]}, [{}, {"level": 4}, {"level": 1, "modes": ["z"]}]),
    ("plain", PLAIN_CLASS, "Predictor", {"text": "t", "names": [], "meta": {}}, [{"text": "t", "count": "2"}, {"text": "t", "note": None}]),
    ("function", FUNCTION, "predict", {"prompt": "cat", "width": 64}, [{"prompt": "cat", "width": 2048}]),
]


@pytest.mark.parametrize("name,src,ref_name,good,bads", CASES, ids=[c[0] for c in CASES])
def test_input_component_validates(tmp_path, name, src, ref_name, good, bads):
    jsonschema = pytest.importorskip("jsonschema")
    p = _example() if src is None else load(tmp_path, src, ref=ref_name)
    doc = _schema.generate(p, method_of(p))
    schemas = doc["components"]["schemas"]
    input_schema = _inline(schemas["Input"], schemas)
    validator_cls = getattr(jsonschema, "Draft202012Validator", None) or jsonschema.Draft7Validator
    validator_cls.check_schema(input_schema)
    validator = validator_cls(input_schema)
    assert list(validator.iter_errors(good)) == []
    for bad in bads:
        assert list(validator.iter_errors(bad)), bad
