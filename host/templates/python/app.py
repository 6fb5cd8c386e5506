"""`{{name}}`: look up one item by id in the items API.

GET ``{base_url}/items/{id}`` with the API's bearer token (a secret the host fills in; the
plugin only writes its placeholder). An unknown id is ``not-found``, which the agent can relay.

componentize-py builds this module into a component of Callout's ``action-plugin`` world; the
``wit_world`` package it imports is generated from Callout's ``wit/`` at build time. The host
calls ``Action.describe`` once at load and ``Action.invoke`` once per call, each in a fresh
instance. Return an ``Outcome``, or raise ``Err(ActionError_...)`` for the host to report.
Import every module at the top of this file: the component holds only what was imported while
componentize-py built it (a first import inside a function fails at call time).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.action import (
    ActionError,
    ActionError_Denied,
    ActionError_Internal,
    ActionError_InvalidInput,
    ActionError_NotFound,
    ActionError_Upstream,
    Descriptor,
    FieldError,
    Invocation,
    Outcome,
    UpstreamError,
    UpstreamKind,
)
from wit_world.imports import config
from wit_world.imports import outbound_http as http

# What the agent sees: JSON Schemas (draft 2020-12) of the inputs and of the outcome's data.
# The host checks every call's inputs against INPUT_SCHEMA (narrowed by action.toml) first.
INPUT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "id": {"description": "The item's id.", "type": "string", "minLength": 1, "maxLength": 64}
    },
    "required": ["id"],
    "additionalProperties": False,
}
OUTPUT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"id": {"type": "string"}, "name": {"type": "string"}},
    "required": ["id", "name"],
}


class DryRun(Exception):
    """The host recorded the request instead of sending it: the call ends successfully."""


def upstream(kind: UpstreamKind, message: str, status: int | None = None) -> Err[ActionError]:
    """An upstream failure, which the action's ``[on_error]`` policy may retry."""
    return Err(ActionError_Upstream(UpstreamError(kind, status, None, message)))


def send(request: http.Request) -> http.Response:
    """Sends ``request`` through the host (the only way out); transport failures raise."""
    try:
        return http.send(request)
    except Err as e:
        match e.value:
            case http.HttpError_DryRun():
                raise DryRun() from None
            case http.HttpError_Denied(denial):  # the grants in action.toml do not allow it
                raise Err(ActionError_Denied(denial)) from None
            case http.HttpError_Timeout():
                raise upstream(
                    UpstreamKind.TIMEOUT, "the upstream did not answer in time"
                ) from None
            case http.HttpError_Connect(message):
                raise upstream(UpstreamKind.CONNECT, message) from None
            case http.HttpError_InvalidRequest(message):
                raise Err(ActionError_Internal(f"invalid request: {message}")) from None
            case _:  # protocol error, response too large
                raise upstream(UpstreamKind.PROTOCOL, f"the upstream failed: {e.value}") from None


def check_status(response: http.Response) -> None:
    """Raises the failure a 4xx or 5xx status means (429 and 5xx may be retried)."""
    status = response.status
    if status == 429:
        seconds = next((v for n, v in response.headers if n == "retry-after"), "")
        wait_ms = int(seconds) * 1000 if seconds.strip().isdigit() else None
        error = UpstreamError(UpstreamKind.RATE_LIMITED, status, wait_ms, "rate limited (429)")
        raise Err(ActionError_Upstream(error))
    if 400 <= status < 500:
        raise upstream(UpstreamKind.CLIENT_ERROR, f"the upstream answered {status}", status)
    if status >= 500:
        raise upstream(UpstreamKind.SERVER_ERROR, f"the upstream answered {status}", status)


def lookup(call: Invocation) -> Outcome:
    """One call: GET the item, then its data and a reply, or the failure the answer means."""
    item_id = json.loads(call.inputs).get("id")
    if not isinstance(item_id, str) or not item_id:
        raise Err(ActionError_InvalidInput([FieldError("id", "must be a non-empty string")]))
    base = config.get("base_url")  # [config] in action.toml, overridden in callout.toml
    if base is None:
        raise Err(ActionError_Internal("set base_url in the [config] table of action.toml"))
    response = send(
        http.Request(
            method=http.Method.GET,
            url=f"{base.rstrip('/')}/items/{quote(item_id, safe='')}",
            # The host fills the secret in after its policy check; the plugin never sees it.
            headers=[
                ("authorization", "Bearer {{secret.API_TOKEN}}"),
                ("accept", "application/json"),
            ],
            body=None,
            timeout_ms=None,  # the action's http.timeout_ms
        )
    )
    if response.status == 404:
        raise Err(ActionError_NotFound(f"there is no item {item_id}"))
    check_status(response)
    try:
        answer = json.loads(response.body)
        item = {"id": str(answer["id"]), "name": str(answer["name"])}
    except (ValueError, TypeError, KeyError) as e:
        raise upstream(
            UpstreamKind.PROTOCOL, f"unexpected answer: {e!r}", response.status
        ) from None
    return Outcome(
        data=json.dumps(item),
        reply=f"{item['id']} is {item['name']}.",
        variables="{}",  # conversation variables to set, as a JSON object
    )


class Action(exports.Action):
    """The ``callout:plugin/action`` export; componentize-py finds it by this name."""

    def describe(self) -> Descriptor:
        return Descriptor(
            name="{{name}}",
            description="Look up an item by its id",
            input_schema=json.dumps(INPUT_SCHEMA),
            output_schema=json.dumps(OUTPUT_SCHEMA),
        )

    def invoke(self, call: Invocation) -> Outcome:
        try:
            return lookup(call)
        except DryRun:  # nothing was sent, so there is nothing to report
            return Outcome(data="null", reply=None, variables="{}")
