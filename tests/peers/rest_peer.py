#!/usr/bin/env python3
"""Calls `callout serve`'s REST API the way an agent would, and checks every answer against the
server's own OpenAPI document.

    rest_peer.py http://127.0.0.1:8080 [--expect-status shipped]     # key from $CALLOUT_AGENT_KEY

schemathesis cannot do this part: the documented inputs are free-form objects, so its cases
never reach an action that runs. Here: order-status with an order that exists (ok), without its
input (needs-input), with an unknown order (failed, not-found); GET /v1/actions/order-status; and
the demo's conversation (a message that triggers order-status before the number is known, then
the number, then the transcript and the end). Each answer must have the documented status code
and validate against the documented schema. Exits 1 on the first failed check.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import urllib.error
import urllib.request
from typing import Any

from jsonschema import Draft202012Validator

ORDER_ID = "123456"


class CheckFailed(Exception):
    pass


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise CheckFailed(message)


class Peer:
    def __init__(self, base: str, key: str, expect_status: str | None) -> None:
        self.base = base.rstrip("/")
        self.key = key
        self.expect_status = expect_status
        self.doc = self.request("GET", "/openapi.json", auth=False)[1]

    def request(self, method: str, path: str, body: Any = None, auth: bool = True) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            status, raw, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
        expect(ctype.startswith("application/json"), f"{method} {path}: Content-Type {ctype!r}: {raw[:300]!r}")
        return status, json.loads(raw)

    def documented(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        """Sends the request and checks the answer's status and body against the document."""
        got, answer = self.request(method, path, body)
        what = f"{method} {path} {json.dumps(body) if body is not None else ''}".rstrip()
        expect(got == status, f"{what}: status {got}, expected {status}: {answer!r}")
        template = self.template_of(path)
        responses = self.doc["paths"][template][method.lower()]["responses"]
        expect(str(got) in responses, f"{what}: status {got} is not documented for {template}")
        schema = responses[str(got)]["content"]["application/json"]["schema"]
        # The schema's $refs point into the document: validate with the document's components.
        root = {**schema, "components": self.doc.get("components", {})}
        errors = sorted(Draft202012Validator(root).iter_errors(answer), key=lambda e: list(e.path))
        expect(
            not errors,
            f"{what}: the answer does not match the documented schema: "
            + "; ".join(f"at /{'/'.join(map(str, e.path))}: {e.message[:200]}" for e in errors[:3])
            + f"\nanswer: {json.dumps(answer)[:1000]}",
        )
        return answer

    def template_of(self, path: str) -> str:
        for template in self.doc["paths"]:
            pattern = "^" + re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(template)) + "$"
            if re.match(pattern, path):
                return template
        raise CheckFailed(f"{path} matches no path of the document")

    def ok(self, what: str) -> None:
        print(f"rest-peer ok: {what}", flush=True)

    def check_action(self) -> None:
        info = self.documented("GET", "/v1/actions/order-status")
        expect(info["name"] == "order-status", f"GET /v1/actions/order-status: name {info['name']!r}")
        expect("order_id" in info["input_schema"].get("properties", {}), f"no order_id input: {info!r}")
        self.ok("GET /v1/actions/order-status matches the document")

    def check_order(self, turn: dict, what: str) -> None:
        expect(turn["status"] == "ok", f"{what}: status {turn['status']!r}: {turn!r}")
        data = turn["outcome"]["data"]
        expect(data.get("order_id") == ORDER_ID, f"{what}: data is for another order: {data!r}")
        if self.expect_status:
            expect(data.get("status") == self.expect_status, f"{what}: order status {data.get('status')!r}")

    def check_invoke(self) -> None:
        path = "/v1/actions/order-status/invoke"
        found = self.documented("POST", path, {"inputs": {"order_id": ORDER_ID}})
        self.check_order(found, f"POST {path} {ORDER_ID}")
        self.ok(f"invoke order-status {ORDER_ID}: ok, {found['outcome']['data'].get('status')!r}, matches the document")

        missing = self.documented("POST", path, {"inputs": {}})
        expect(missing["status"] == "needs-input", f"POST {path} {{}}: status {missing['status']!r}")
        fields = [f["field"] for f in missing["error"]["fields"]]
        expect("order_id" in fields, f"POST {path} {{}}: order_id not among the fields {fields}")
        expect(bool(missing.get("say")), f"POST {path} {{}}: no question to ask in say: {missing!r}")
        self.ok(f"invoke order-status {{}}: needs-input {fields}, matches the document")

        unknown = self.documented("POST", path, {"inputs": {"order_id": "999999"}})
        expect(
            unknown["status"] == "failed" and unknown["error"]["class"] == "not-found",
            f"POST {path} 999999: expected failed/not-found: {unknown!r}",
        )
        self.ok("invoke order-status 999999: failed, not-found, matches the document")

    def check_conversation(self) -> None:
        cid = "peer-" + secrets.token_hex(8)
        path = f"/v1/conversations/{cid}"
        first = self.documented("POST", path + "/messages", {"text": "Hi! Where is my order?"})
        turns = {t["action"]: t for t in first["turns"]}
        expect(
            turns.get("order-status", {}).get("status") == "needs-input",
            f"POST {path}/messages 'where is my order': order-status should ask for the number: {first!r}",
        )
        second = self.documented("POST", path + "/messages", {"text": f"It's {ORDER_ID}."})
        turns = {t["action"]: t for t in second["turns"]}
        expect("order-status" in turns, f"POST {path}/messages '{ORDER_ID}': order-status did not run: {second!r}")
        self.check_order(turns["order-status"], f"POST {path}/messages '{ORDER_ID}'")
        view = self.documented("GET", path)
        expect(len(view["messages"]) >= 2, f"GET {path}: the transcript misses messages: {view!r}")
        self.documented("POST", path + "/end")
        ended = self.documented("GET", path)
        expect(ended.get("ended_at_ms") is not None, f"GET {path} after end: no ended_at_ms: {ended!r}")
        self.documented("POST", path + "/messages", {"text": "one more"}, status=409)
        self.ok("conversation: asked for the order number, answered it, transcript, end, then 409; all match the document")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url", help="the server's base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--expect-status", help=f"the status order {ORDER_ID} must have (e.g. shipped)")
    args = ap.parse_args()
    key = os.environ.get("CALLOUT_AGENT_KEY")
    if not key:
        print("rest-peer FAIL: CALLOUT_AGENT_KEY is not set", file=sys.stderr)
        return 1
    try:
        peer = Peer(args.url, key, args.expect_status)
        peer.check_action()
        peer.check_invoke()
        peer.check_conversation()
    except CheckFailed as e:
        print(f"rest-peer FAIL: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"rest-peer FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("rest-peer all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
