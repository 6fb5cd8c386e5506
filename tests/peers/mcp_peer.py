#!/usr/bin/env python3
"""An independent MCP client for Callout, built on the official MCP Python SDK (`mcp`).

    mcp_peer.py --http http://127.0.0.1:8080/mcp      # key from $CALLOUT_AGENT_KEY
    mcp_peer.py --stdio -- target/debug/callout mcp --actions plugins ...

Checks, each printed on one line: initialize; tools/list (every tool has a name, a description,
an object inputSchema and an outputSchema); order-status for an order that exists; order-status
without its required input, from a client that does not declare elicitation (the needs-input
fallback: isError, the fields under _meta["callout/needs-input"]); the same from a client that
answers an elicitation (the call then succeeds). Over HTTP, also: /mcp refuses a request without
the key, and one with a wrong key. Exits 1 on the first failed check. The stdio server inherits
this process's environment.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import anyio
import httpx2
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

TOOL = "order-status"
ORDER_ID = "123456"
TIMEOUT_S = 60
# Where the server puts the inputs still needed on an isError result.
META_NEEDS_INPUT = "callout/needs-input"


class CheckFailed(Exception):
    pass


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise CheckFailed(message)


class Peer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.mode = "http" if args.http else "stdio"

    def ok(self, what: str) -> None:
        print(f"mcp-peer[{self.mode}] ok: {what}", flush=True)

    @asynccontextmanager
    async def session(self, elicitation_callback: Any = None) -> AsyncIterator[ClientSession]:
        """A connected, initialized session; a new server process per session over stdio."""
        if self.args.http:
            key = os.environ.get("CALLOUT_AGENT_KEY")
            expect(bool(key), "CALLOUT_AGENT_KEY is not set")
            headers = {"Authorization": f"Bearer {key}"}
            timeout = httpx2.Timeout(30, read=TIMEOUT_S)
            async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
                async with streamable_http_client(self.args.http, http_client=http) as (r, w):
                    async with ClientSession(r, w, elicitation_callback=elicitation_callback) as s:
                        self.init = await s.initialize()
                        yield s
        else:
            cmd = self.args.command
            params = StdioServerParameters(command=cmd[0], args=cmd[1:], env=dict(os.environ))
            async with stdio_client(params) as (r, w):
                async with ClientSession(r, w, elicitation_callback=elicitation_callback) as s:
                    self.init = await s.initialize()
                    yield s

    async def check_auth_refused(self) -> None:
        """/mcp answers 401 to an initialize without the key, and with a wrong one."""
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "callout-mcp-peer", "version": "0"},
            },
        }
        accept = {"Accept": "application/json, text/event-stream"}
        async with httpx2.AsyncClient(timeout=10) as http:
            for label, auth in [("no key", {}), ("a wrong key", {"Authorization": "Bearer wrong-key"})]:
                resp = await http.post(self.args.http, json=body, headers={**accept, **auth})
                expect(
                    resp.status_code == 401,
                    f"POST {self.args.http} initialize with {label}: expected 401, got "
                    f"{resp.status_code} {resp.text[:300]!r}",
                )
        self.ok("/mcp refuses a request with no key and with a wrong key (401)")

    def check_initialize(self) -> None:
        init = self.init
        expect(
            init.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS,
            f"initialize: unknown protocol version {init.protocol_version!r}",
        )
        expect(init.capabilities.tools is not None, "initialize: the server declares no tools capability")
        expect(bool(init.server_info.name), "initialize: serverInfo.name is empty")
        self.ok(
            f"initialize (server {init.server_info.name} {init.server_info.version}, "
            f"protocol {init.protocol_version})"
        )

    async def check_list_tools(self, s: ClientSession) -> None:
        tools: list[types.Tool] = []
        cursor = None
        for _ in range(100):
            page = await s.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        expect(bool(tools), "tools/list: no tools")
        for t in tools:
            expect(bool(t.name), f"tools/list: a tool without a name: {t!r}")
            expect(bool(t.description), f"tools/list: {t.name} has no description")
            expect(
                isinstance(t.input_schema, dict) and t.input_schema.get("type") == "object",
                f"tools/list: {t.name}'s inputSchema is not of type object: {t.input_schema!r}",
            )
            expect(
                isinstance(t.output_schema, dict) and t.output_schema.get("type") == "object",
                f"tools/list: {t.name}'s outputSchema is missing or not of type object: {t.output_schema!r}",
            )
        names = [t.name for t in tools]
        expect(TOOL in names, f"tools/list: no {TOOL} among {names}")
        order = next(t for t in tools if t.name == TOOL)
        expect(
            "order_id" in order.input_schema.get("properties", {}),
            f"tools/list: {TOOL}'s inputSchema has no order_id property: {order.input_schema!r}",
        )
        self.ok(f"tools/list: {len(tools)} tools, each with name, description, inputSchema, outputSchema ({', '.join(names)})")

    async def call(self, s: ClientSession, arguments: dict[str, Any]) -> types.CallToolResult:
        # The SDK checks a successful result's structuredContent against the tool's outputSchema
        # (it raises RuntimeError when it does not conform).
        try:
            return await s.call_tool(TOOL, arguments)
        except RuntimeError as e:
            raise CheckFailed(f"tools/call {TOOL} {arguments}: {e}") from e

    def expect_order(self, result: types.CallToolResult, what: str) -> str:
        sc = result.structured_content
        expect(not result.is_error, f"{what}: isError is true: {result.model_dump(by_alias=True)!r}")
        expect(isinstance(sc, dict), f"{what}: no structuredContent object: {result.model_dump(by_alias=True)!r}")
        expect(
            isinstance(sc.get("status"), str) and sc["status"],
            f"{what}: structuredContent has no status: {sc!r}",
        )
        expect(sc.get("order_id") == ORDER_ID, f"{what}: structuredContent is for another order: {sc!r}")
        if self.args.expect_status:
            expect(
                sc["status"] == self.args.expect_status,
                f"{what}: status {sc['status']!r}, expected {self.args.expect_status!r}",
            )
        return sc["status"]

    async def check_found(self, s: ClientSession) -> None:
        result = await self.call(s, {"order_id": ORDER_ID})
        status = self.expect_order(result, f"tools/call {TOOL} {{order_id: {ORDER_ID}}}")
        self.ok(f"tools/call {TOOL} {ORDER_ID}: status {status!r}, structuredContent matches outputSchema")

    async def check_needs_input_fallback(self, s: ClientSession) -> None:
        """The fallback for a client without elicitation: an isError result whose text lists the
        questions and whose `_meta["callout/needs-input"]` holds
        `{"status": "needs-input", "tool": ..., "fields": [{"field": ..., ...}]}`. It carries no
        structuredContent: that would have to conform to the tool's outputSchema."""
        what = f"tools/call {TOOL} {{}} (client without elicitation)"
        result = await self.call(s, {})
        dump = result.model_dump(by_alias=True, exclude_none=True)
        expect(result.is_error, f"{what}: isError is not true: {dump!r}")
        expect(result.structured_content is None, f"{what}: an error result with structuredContent: {dump!r}")
        details = (result.meta or {}).get(META_NEEDS_INPUT)
        expect(isinstance(details, dict), f"{what}: no _meta[{META_NEEDS_INPUT!r}] object: {dump!r}")
        expect(details.get("status") == "needs-input", f"{what}: _meta status is not 'needs-input': {details!r}")
        expect(details.get("tool") == TOOL, f"{what}: _meta tool is not {TOOL!r}: {details!r}")
        fields = details.get("fields")
        expect(isinstance(fields, list), f"{what}: _meta fields is not a list: {details!r}")
        names = [f.get("field") if isinstance(f, dict) else None for f in fields]
        expect("order_id" in names, f"{what}: order_id is not among the fields: {fields!r}")
        text = "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))
        expect("order_id" in text, f"{what}: the text does not name order_id: {text!r}")
        self.ok(f"tools/call {TOOL} {{}} without elicitation: isError, needs-input fields {names} in _meta and text")

    async def check_elicitation(self) -> None:
        asked: list[Any] = []

        async def answer(_ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
            asked.append(params)
            return types.ElicitResult(action="accept", content={"order_id": ORDER_ID})

        what = f"tools/call {TOOL} {{}} (client answering elicitation)"
        async with self.session(elicitation_callback=answer) as s:
            result = await self.call(s, {})
        expect(len(asked) == 1, f"{what}: expected one elicitation/create, got {len(asked)}")
        p = asked[0]
        expect(isinstance(p, types.ElicitRequestFormParams), f"{what}: the elicitation is not a form: {p!r}")
        expect(bool(p.message), f"{what}: the elicitation has no message")
        props = p.requested_schema.get("properties", {})
        expect("order_id" in props, f"{what}: requestedSchema does not ask for order_id: {p.requested_schema!r}")
        status = self.expect_order(result, what)
        self.ok(f"tools/call {TOOL} {{}} with elicitation: asked {p.message!r}, answered, status {status!r}")

    async def run(self) -> None:
        with anyio.fail_after(TIMEOUT_S * 2):
            if self.args.http:
                await self.check_auth_refused()
            async with self.session() as s:
                self.check_initialize()
                await self.check_list_tools(s)
                await self.check_found(s)
                await self.check_needs_input_fallback(s)
            await self.check_elicitation()


def first_cause(e: BaseException) -> BaseException:
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    return e


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--http", metavar="URL", help="the streamable HTTP endpoint, e.g. http://127.0.0.1:8080/mcp")
    mode.add_argument("--stdio", action="store_true", help="launch the server command given after --")
    ap.add_argument("--expect-status", help=f"the status order {ORDER_ID} must have (e.g. shipped)")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- callout mcp ... (with --stdio)")
    args = ap.parse_args()
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if args.stdio and not args.command:
        ap.error("--stdio needs the server command after --")
    if args.http and args.command:
        ap.error("--http takes no command")
    peer = Peer(args)
    try:
        anyio.run(peer.run)
    except BaseException as e:  # noqa: BLE001 - report whatever ended the run, as a failed check
        cause = first_cause(e)
        if isinstance(cause, KeyboardInterrupt):
            raise
        if isinstance(cause, CheckFailed):
            print(f"mcp-peer[{peer.mode}] FAIL: {cause}", file=sys.stderr)
        elif isinstance(cause, TimeoutError):
            print(f"mcp-peer[{peer.mode}] FAIL: no answer within {TIMEOUT_S * 2} s", file=sys.stderr)
        else:
            print(f"mcp-peer[{peer.mode}] FAIL: {type(cause).__name__}: {cause!r}", file=sys.stderr)
        return 1
    print(f"mcp-peer[{peer.mode}] all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
