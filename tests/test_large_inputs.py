"""Large inputs travel as the client's own bytes when validation leaves them unchanged, and
re-encoded when it strips a key or injects a null: both must reach the predictor exactly as
validated."""

import pytest

from conftest import SLOW

PREDICTOR = """
from typing import Optional


class Predictor:
    def predict(self, text: str, note: Optional[str] = None) -> dict:
        return {"len": len(text), "head": text[:8], "tail": text[-8:], "note": note}
"""

SCHEMA = {
    "openapi": "3.0.2",
    "info": {"title": "Cog", "version": "0.1.0"},
    "paths": {},
    "components": {
        "schemas": {
            "Input": {
                "type": "object",
                "title": "Input",
                "required": ["text"],
                "properties": {
                    "text": {"type": "string", "title": "Text", "x-order": 0},
                    "note": {"type": "string", "title": "Note", "x-order": 1, "nullable": True},
                },
            },
            "Output": {"type": "object", "title": "Output"},
        }
    },
}


@pytest.fixture(scope="module")
def srv(make_module_server):
    return make_module_server(code=PREDICTOR, files={".cog/openapi_schema.json": SCHEMA})


@pytest.mark.parametrize("size", [100 << 10, 7 << 20])  # inline frame, and spilled to a file
def test_unchanged_large_input_round_trips(srv, size):
    text = "ab\u00e9\"" * (size // 4)  # escapes and non-ASCII survive as sent
    r = srv.predict({"text": text, "note": "n"}, timeout=60 * SLOW)
    body = r.json()
    assert body["status"] == "succeeded", body
    assert body["output"] == {"len": len(text), "head": text[:8], "tail": text[-8:], "note": "n"}


@pytest.mark.parametrize("size", [100 << 10, 7 << 20])
def test_stripped_key_never_reaches_the_predictor(srv, size):
    text = "x" * size
    r = srv.predict({"text": text, "note": "kept", "bogus": [1, 2, 3]}, timeout=60 * SLOW)
    body = r.json()
    assert body["status"] == "succeeded", body  # a bogus kwarg would be a TypeError
    assert body["output"]["len"] == size and body["output"]["note"] == "kept"


@pytest.mark.parametrize("size", [100 << 10, 7 << 20])
def test_injected_null_reaches_the_predictor(srv, size):
    r = srv.predict({"text": "y" * size}, timeout=60 * SLOW)
    body = r.json()
    assert body["status"] == "succeeded", body
    assert body["output"]["note"] is None and body["output"]["len"] == size
