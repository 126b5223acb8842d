"""The harness's pure pieces: error bodies -> messages, statuses -> exceptions. No network, no Docker."""

from __future__ import annotations

import httpx
import pytest
from pydantic import BaseModel

from integration.errors import HarnessError
from integration.harness import (
    error_detail,
    event_map,
    render_validation_errors,
    response_message,
    status_error,
)

URL = "http://127.0.0.1:8000/links"

FASTAPI_422 = {
    "detail": [
        {
            "type": "value_error",
            "loc": ["body", "url"],
            "msg": "Value error, url must be an absolute http or https URL",
            "input": "ftp://x",
        },
        {"type": "missing", "loc": ["body", "items", 0, "code"], "msg": "Field required", "input": {}},
        {"type": "int_parsing", "loc": ["query", "limit"], "msg": "Input should be a valid integer"},
    ]
}


def response(status: int, **kwargs) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("POST", URL), **kwargs)


def test_422_errors_render_as_field_colon_message():
    assert render_validation_errors(FASTAPI_422["detail"]) == (
        "url: Value error, url must be an absolute http or https URL; "
        "items[0].code: Field required; limit: Input should be a valid integer"
    )


def test_422_error_without_a_field_or_message():
    assert render_validation_errors([{"loc": ["body"], "msg": "Field required"}]) == "body: Field required"
    assert render_validation_errors([{"loc": [], "msg": "bad"}]) == "bad"
    assert render_validation_errors(["plain"]) == "plain"
    assert render_validation_errors([{"loc": ["body", "x"]}]) == 'x: {"loc": ["body", "x"]}'


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"detail": "Link not found"}, "Link not found"),
        ({"detail": {"code": "taken"}}, '{"code":"taken"}'),
        ({"message": "nope"}, "nope"),
        ({"error": "bad thing"}, "bad thing"),
        ({"other": 1}, None),
        (["not", "a", "mapping"], None),
    ],
)
def test_error_detail(body, expected):
    assert error_detail(body) == expected


def test_response_message_falls_back_to_text_then_reason():
    assert response_message(response(500, text="boom\n  trace")) == "boom trace"
    assert response_message(response(502)) == "Bad Gateway"
    assert response_message(response(500, text="x" * 50), limit=10) == "xxxxxxxxxx... (50 characters)"


def test_404_is_a_key_error_with_the_servers_detail():
    error = status_error("GET", URL, response(404, json={"detail": "Link 'abc' not found"}))
    assert isinstance(error, KeyError) and error.args == ("Link 'abc' not found",)


@pytest.mark.parametrize("status", [400, 409, 422])
def test_refusals_are_value_errors(status):
    body = FASTAPI_422 if status == 422 else {"detail": "code already taken"}
    error = status_error("POST", URL, response(status, json=body))
    assert type(error) is ValueError
    expected = render_validation_errors(FASTAPI_422["detail"]) if status == 422 else "code already taken"
    assert str(error) == expected


@pytest.mark.parametrize("status", [401, 403, 405, 500, 503, 307])
def test_other_statuses_are_harness_errors_naming_the_request(status):
    error = status_error("POST", URL, response(status, text="Internal trouble " * 100), limit=40)
    assert isinstance(error, HarnessError)
    message = str(error)
    assert message.startswith(f"POST {URL} -> {status} ")
    assert "Internal trouble" in message and "characters)" in message and len(message) < 200


def test_an_error_without_a_body_says_so():
    assert str(status_error("DELETE", URL, response(500))).endswith("Internal Server Error: (no body)")


def test_event_map_keys_models_by_class_name():
    class LinkCreated(BaseModel):
        code: str

    class LinkVisited(BaseModel):
        code: str

    assert event_map([LinkCreated], [LinkVisited]) == {"LinkCreated": LinkCreated, "LinkVisited": LinkVisited}
