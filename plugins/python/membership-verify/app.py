"""`membership-verify-py`: check that a membership is active, written in Python.

The Python twin of the Rust action in ``plugins/membership-verify``, with the same inputs,
output, request, failures and reply. It POSTs the member id and date of birth to
``{base_url}/memberships/verify``; an unknown member (or a date of birth that does not match)
is ``not-found``, and the API does not say which.

componentize-py turns this module into a component of the ``action-plugin`` world: the
``wit_world`` package it imports is generated from ``wit/`` at build time (see
docs/plugins-python.md). The host calls ``Action.describe`` once at load and ``Action.invoke``
once per call, each in a fresh instance, so nothing here outlives a call.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

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

NAME = "membership-verify-py"
DESCRIPTION = "Check whether a member's membership is active, and on which plan"

# The same JSON Schemas (draft 2020-12) the Rust action derives from its types. The host
# validates every call's inputs against INPUT_SCHEMA (narrowed by action.toml) before invoke.
INPUT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Input",
    "description": "What the agent must collect.",
    "type": "object",
    "properties": {
        "member_id": {
            "description": "The member's id, `M-` followed by digits.",
            "type": "string",
            "pattern": "^M-[0-9]+$",
        },
        "date_of_birth": {
            "description": "The member's date of birth, YYYY-MM-DD, to confirm identity.",
            "type": "string",
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
        },
    },
    "additionalProperties": False,
    "required": ["member_id", "date_of_birth"],
}

OUTPUT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Membership",
    "description": "What the agent gets back.",
    "type": "object",
    "properties": {
        "member_id": {"type": "string"},
        "active": {"description": "Whether the membership is active now.", "type": "boolean"},
        "plan": {"type": "string"},
        "valid_until": {"type": ["string", "null"]},
        "expired_on": {"type": ["string", "null"]},
    },
    "required": ["member_id", "active", "plan", "valid_until", "expired_on"],
}

MEMBER_ID = re.compile(r"M-[0-9]+")
DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
SNIPPET_CHARS = 200  # the longest body excerpt quoted in a client-error message


@dataclass(frozen=True)
class Membership:
    """What the agent gets back: the outcome's ``data`` (OUTPUT_SCHEMA)."""

    member_id: str
    active: bool  # whether the membership is active now
    plan: str
    valid_until: str | None
    expired_on: str | None


# --- Helpers any Python action can copy: failures, config, outbound HTTP ------------------------


class DryRun(Exception):
    """The host recorded a request instead of sending it: the call ends successfully, empty."""


def fail(error: ActionError) -> Err[ActionError]:
    """The exception that makes ``invoke`` return ``error`` to the host: ``raise fail(...)``."""
    return Err(error)


def upstream(
    kind: UpstreamKind, message: str, status: int | None = None, retry_after_ms: int | None = None
) -> Err[ActionError]:
    """An upstream failure, which the action's ``[on_error]`` policy may retry."""
    return fail(ActionError_Upstream(UpstreamError(kind, status, retry_after_ms, message)))


def require_config(key: str) -> str:
    """The ``[config]`` value under ``key`` (deployments override it in callout.toml)."""
    value = config.get(key)
    if value is None:
        raise fail(
            ActionError_Internal(
                f"the config key `{key}` is not set: set it in the [config] table of action.toml"
            )
        )
    return value


def send(request: http.Request) -> http.Response:
    """Sends ``request`` through the host, turning a transport failure into the action's error.

    Any status is a response; use :func:`check_status` to turn 4xx and 5xx into failures.
    """
    try:
        return http.send(request)
    except Err as e:
        error: http.HttpError = e.value
        match error:
            case http.HttpError_DryRun():
                raise DryRun() from None
            case http.HttpError_Denied(denial):
                raise fail(ActionError_Denied(denial)) from None
            case http.HttpError_Timeout():
                raise upstream(
                    UpstreamKind.TIMEOUT, "the upstream did not answer in time"
                ) from None
            case http.HttpError_Connect(message):
                raise upstream(UpstreamKind.CONNECT, message) from None
            case http.HttpError_ResponseTooLarge(cap):
                raise upstream(UpstreamKind.PROTOCOL, f"response larger than {cap} bytes") from None
            case http.HttpError_Protocol(message):
                raise upstream(UpstreamKind.PROTOCOL, message) from None
            case http.HttpError_InvalidRequest(message):
                raise fail(ActionError_Internal(f"invalid request: {message}")) from None
        raise


def header(response: http.Response, name: str) -> str | None:
    """The first value of header ``name`` (names arrive in lower case)."""
    return next((v for n, v in response.headers if n == name.lower()), None)


def retry_after_ms(value: str | None) -> int | None:
    """``Retry-After`` in milliseconds when it is delta-seconds (an HTTP-date gives ``None``)."""
    if value is None or not re.fullmatch(r"\+?[0-9]+", value.strip()):
        return None
    return int(value.strip()) * 1000


def snippet(body: bytes) -> str:
    """The start of ``body`` for a message: whitespace collapsed, at most SNIPPET_CHARS chars.

    Reads words only until it has enough, so a 1 MiB error page costs no more than its text.
    """
    words: list[str] = []
    length = -1
    for word in re.finditer(r"\S+", body.decode("utf-8", "replace")):
        words.append(word.group())
        length += len(words[-1]) + 1
        if length > SNIPPET_CHARS:
            break
    text = " ".join(words)
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…"


def check_status(response: http.Response) -> None:
    """Raises the failure a 4xx or 5xx status means: 429 rate-limited (with its Retry-After),
    5xx server-error, other 4xx client-error quoting the start of the body."""
    status = response.status
    if status < 400:
        return
    if status == 429:
        raise upstream(
            UpstreamKind.RATE_LIMITED,
            "the upstream answered 429 Too Many Requests",
            status,
            retry_after_ms(header(response, "retry-after")),
        )
    if status < 500:
        quoted = snippet(response.body)
        message = f"the upstream answered {status}" + (f": {quoted}" if quoted else "")
        raise upstream(UpstreamKind.CLIENT_ERROR, message, status)
    if status < 600:
        raise upstream(UpstreamKind.SERVER_ERROR, f"the upstream answered {status}", status)
    raise upstream(
        UpstreamKind.PROTOCOL, f"the upstream answered an invalid status {status}", status
    )


# --- The action ---------------------------------------------------------------------------------


def parse_inputs(text: str) -> tuple[str, str]:
    """The member id and date of birth, checked as the Rust action checks them."""
    inputs = json.loads(text)
    errors: list[FieldError] = []
    for field in sorted(set(inputs) - {"member_id", "date_of_birth"}):
        errors.append(FieldError(field, "is not a known input"))
    member_id = inputs.get("member_id")
    date_of_birth = inputs.get("date_of_birth")
    if not isinstance(member_id, str) or not MEMBER_ID.fullmatch(member_id):
        errors.append(FieldError("member_id", "must be M- followed by digits, like M-1001"))
    if not isinstance(date_of_birth, str) or not DATE.fullmatch(date_of_birth):
        errors.append(FieldError("date_of_birth", "must be a date written YYYY-MM-DD"))
    if errors:
        raise fail(ActionError_InvalidInput(errors))
    return member_id, date_of_birth


def parse_answer(response: http.Response) -> Membership:
    """The membership API's answer: ``member_id``, ``status`` and ``plan`` (strings), and
    ``valid_until`` / ``expired_on`` (string or absent). Anything else is a protocol failure."""
    try:
        answer = json.loads(response.body)
        if not isinstance(answer, dict):
            raise ValueError("not a JSON object")
        for key in ("member_id", "status", "plan"):
            if not isinstance(answer.get(key), str):
                raise ValueError(f"`{key}` is missing or not a string")
        for key in ("valid_until", "expired_on"):
            if not isinstance(answer.get(key), str | None):
                raise ValueError(f"`{key}` is not a string")
    except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise upstream(
            UpstreamKind.PROTOCOL,
            f"the upstream's response is not the expected JSON: {e}",
            response.status,
        ) from None
    return Membership(
        member_id=answer["member_id"],
        active=answer["status"] == "active",
        plan=answer["plan"],
        valid_until=answer.get("valid_until"),
        expired_on=answer.get("expired_on"),
    )


def verify(call: Invocation) -> Outcome:
    """Runs one call: the request, then the outcome or the failure its answer means."""
    member_id, date_of_birth = parse_inputs(call.inputs)
    base = require_config("base_url").rstrip("/")
    headers = [
        # The host fills the placeholder in after its policy check; the plugin never sees it.
        ("authorization", "Bearer {{secret.MEMBERSHIP_TOKEN}}"),
        ("content-type", "application/json"),
    ]
    if call.idempotency_key:
        # The same key on every retry of this call, so the upstream applies the write once.
        headers.append(("Idempotency-Key", call.idempotency_key))
    body = json.dumps(
        {"member_id": member_id, "date_of_birth": date_of_birth}, separators=(",", ":")
    )
    response = send(
        http.Request(
            method=http.Method.POST,
            url=f"{base}/memberships/verify",
            headers=headers,
            body=body.encode(),
            timeout_ms=None,  # the action's http.timeout_ms
        )
    )
    if response.status == 404:
        raise fail(
            ActionError_NotFound(f"no membership matches {member_id} with that date of birth")
        )
    check_status(response)
    m = parse_answer(response)
    if m.active:
        until = f" until {m.valid_until}" if m.valid_until is not None else ""
        reply = f"Membership {m.member_id} is active on the {m.plan} plan{until}."
    else:
        expired = f" (it expired on {m.expired_on})" if m.expired_on is not None else ""
        reply = f"Membership {m.member_id} is not active{expired}."
    return Outcome(
        data=json.dumps(asdict(m)),
        reply=reply,
        variables=json.dumps({"membership_active": m.active}),
    )


class Action(exports.Action):
    """The ``callout:plugin/action`` export; componentize-py finds it by this name."""

    def describe(self) -> Descriptor:
        return Descriptor(NAME, DESCRIPTION, json.dumps(INPUT_SCHEMA), json.dumps(OUTPUT_SCHEMA))

    def invoke(self, call: Invocation) -> Outcome:
        """Returns the outcome, or raises ``Err(ActionError)`` for the host to report."""
        try:
            return verify(call)
        except DryRun:
            return Outcome(data="null", reply=None, variables="{}")
        except Err:
            raise
        except Exception as e:  # a bug: report it as one rather than trap
            raise fail(ActionError_Internal(f"{type(e).__name__}: {e}")) from None
