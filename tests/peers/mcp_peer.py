#!/usr/bin/env python3
"""An independent MCP client for Callout, built on the official MCP Python SDK (`mcp`).

    mcp_peer.py --http http://127.0.0.1:8080/mcp      # key from $CALLOUT_AGENT_KEY
    mcp_peer.py --stdio -- target/debug/callout mcp --actions plugins ...

Each check prints one line. In each protocol era (the `initialize` handshake, which the SDK
opens at 2025-11-25, and the handshake-less 2026-07-28 reached through `server/discover`):
the connection; tools/list (every tool has a name, a description, an object inputSchema and an
object outputSchema); order-status for an order that exists (the SDK also checks the
structuredContent against the outputSchema); order-status without its input from a client that
declares no elicitation (the fallback: isError, the fields under _meta["callout/needs-input"]
and named in the text, no structuredContent); the same from a client that answers the
elicitation (asked once, for order_id; the call then succeeds). Over HTTP, first: /mcp refuses
a request without the key and one with a wrong key. Exits 1 on the first failed check. The
stdio server inherits this process's environment.
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
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

TOOL = "order-status"
ORDER_ID = "123456"
TIMEOUT_S = 60
# Where the server puts the inputs still needed on an isError result.
META_NEEDS_INPUT = "callout/needs-input"
# The SDK's connect modes: "legacy" runs the initialize handshake; "auto" probes server/discover
# and must land on a 2026-07-28 (modern) version, since the server implements it.
ERAS = {"handshake": ("legacy", HANDSHAKE_PROTOCOL_VERSIONS), "modern": ("auto", MODERN_PROTOCOL_VERSIONS)}


class CheckFailed(Exception):
    pass


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise CheckFailed(message)


class Peer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.transport = "http" if args.http else "stdio"
        self.era = ""

    def ok(self, what: str) -> None:
        print(f"mcp-peer[{self.transport} {self.era}] ok: {what}", flush=True)

    @asynccontextmanager
    async def client(self, elicitation_callback: Any = None) -> AsyncIterator[Client]:
        """A connected client in the current era; a new server process per client over stdio."""
        mode = ERAS[self.era][0]
        if self.args.http:
            key = os.environ.get("CALLOUT_AGENT_KEY")
            expect(bool(key), "CALLOUT_AGENT_KEY is not set")
            timeout = httpx2.Timeout(30, read=TIMEOUT_S)
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=timeout) as http:
                server = streamable_http_client(self.args.http, http_client=http)
                async with Client(server, mode=mode, elicitation_callback=elicitation_callback) as c:
                    yield c
        else:
            cmd = self.args.command
            server = StdioServerParameters(command=cmd[0], args=cmd[1:], env=dict(os.environ))
            async with Client(server, mode=mode, elicitation_callback=elicitation_callback) as c:
                yield c

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
            for label, auth in [("no key", {}), ("a wrong key", {"Authorization": "Bearer wrong-key-0123456789"})]:
                resp = await http.post(self.args.http, json=body, headers={**accept, **auth})
                expect(
                    resp.status_code == 401,
                    f"POST {self.args.http} initialize with {label}: expected 401, got "
                    f"{resp.status_code} {resp.text[:300]!r}",
                )
        print("mcp-peer[http] ok: /mcp refuses a request with no key and with a wrong key (401)", flush=True)

    def check_connected(self, c: Client) -> None:
        versions = ERAS[self.era][1]
        expect(
            c.protocol_version in versions,
            f"connect: protocol version {c.protocol_version!r}, expected one of {list(versions)}",
        )
        expect(c.server_capabilities.tools is not None, "connect: the server declares no tools capability")
        info = c.server_info
        name = f"{info.name} {info.version}" if info else "(anonymous)"
        self.ok(f"connected (server {name}, protocol {c.protocol_version})")

    async def check_list_tools(self, c: Client) -> None:
        tools: list[types.Tool] = []
        cursor = None
        for _ in range(100):
            page = await c.list_tools(cursor=cursor)
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
        self.ok(f"tools/list: {len(tools)} tools with name, description, inputSchema, outputSchema ({', '.join(names)})")

    async def call(self, c: Client, arguments: dict[str, Any]) -> types.CallToolResult:
        # The SDK checks a successful result's structuredContent against the tool's outputSchema
        # (it raises RuntimeError when it does not conform).
        try:
            return await c.call_tool(TOOL, arguments)
        except RuntimeError as e:
            raise CheckFailed(f"tools/call {TOOL} {arguments}: {e}") from e

    def expect_order(self, result: types.CallToolResult, what: str) -> str:
        sc = result.structured_content
        dump = result.model_dump(by_alias=True, exclude_none=True)
        expect(not result.is_error, f"{what}: isError is true: {dump!r}")
        expect(isinstance(sc, dict), f"{what}: no structuredContent object: {dump!r}")
        expect(isinstance(sc.get("status"), str) and sc["status"], f"{what}: structuredContent has no status: {sc!r}")
        expect(sc.get("order_id") == ORDER_ID, f"{what}: structuredContent is for another order: {sc!r}")
        if self.args.expect_status:
            expect(
                sc["status"] == self.args.expect_status,
                f"{what}: status {sc['status']!r}, expected {self.args.expect_status!r}",
            )
        return sc["status"]

    async def check_found(self, c: Client) -> None:
        result = await self.call(c, {"order_id": ORDER_ID})
        status = self.expect_order(result, f"tools/call {TOOL} {{order_id: {ORDER_ID}}}")
        self.ok(f"tools/call {TOOL} {ORDER_ID}: status {status!r}, structuredContent matches outputSchema")

    async def check_needs_input_fallback(self, c: Client) -> None:
        """The fallback for a client without elicitation: an isError result whose text lists the
        questions and whose `_meta["callout/needs-input"]` holds
        `{"status": "needs-input", "tool": ..., "fields": [{"field": ..., ...}]}`. It carries no
        structuredContent: that would have to conform to the tool's outputSchema."""
        what = f"tools/call {TOOL} {{}} (client without elicitation)"
        result = await self.call(c, {})
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
        self.ok(f"tools/call {TOOL} {{}} without elicitation: isError, needs-input {names} in _meta and text")

    async def check_elicitation(self) -> None:
        asked: list[Any] = []

        async def answer(_ctx: Any, params: Any) -> types.ElicitResult:
            asked.append(params)
            return types.ElicitResult(action="accept", content={"order_id": ORDER_ID})

        what = f"tools/call {TOOL} {{}} (client answering elicitation)"
        async with self.client(elicitation_callback=answer) as c:
            result = await self.call(c, {})
        expect(len(asked) == 1, f"{what}: expected one elicitation, got {len(asked)}")
        p = asked[0]
        expect(isinstance(p, types.ElicitRequestFormParams), f"{what}: the elicitation is not a form: {p!r}")
        expect(bool(p.message), f"{what}: the elicitation has no message")
        props = p.requested_schema.get("properties", {})
        expect("order_id" in props, f"{what}: requestedSchema does not ask for order_id: {p.requested_schema!r}")
        status = self.expect_order(result, what)
        self.ok(f"tools/call {TOOL} {{}} with elicitation: asked once for order_id, answered, status {status!r}")

    async def run(self) -> None:
        with anyio.fail_after(TIMEOUT_S * 2):
            if self.args.http:
                await self.check_auth_refused()
            for era in self.args.era:
                self.era = era
                async with self.client() as c:
                    self.check_connected(c)
                    await self.check_list_tools(c)
                    await self.check_found(c)
                    await self.check_needs_input_fallback(c)
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
    ap.add_argument(
        "--era", action="append", choices=list(ERAS), help="a protocol era to check (repeatable; default: both)"
    )
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- callout mcp ... (with --stdio)")
    args = ap.parse_args()
    args.era = args.era or list(ERAS)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if args.stdio and not args.command:
        ap.error("--stdio needs the server command after --")
    if args.http and args.command:
        ap.error("--http takes no command")
    peer = Peer(args)
    try:
        anyio.run(peer.run)
    except BaseException as e:  # noqa: BLE001 - whatever ended the run is reported as a failed check
        cause = first_cause(e)
        if isinstance(cause, KeyboardInterrupt):
            raise
        where = f"mcp-peer[{peer.transport} {peer.era}]"
        if isinstance(cause, CheckFailed):
            print(f"{where} FAIL: {cause}", file=sys.stderr)
        elif isinstance(cause, TimeoutError):
            print(f"{where} FAIL: no answer within {TIMEOUT_S * 2} s", file=sys.stderr)
        else:
            print(f"{where} FAIL: {type(cause).__name__}: {cause!r}", file=sys.stderr)
        return 1
    print(f"mcp-peer[{peer.transport}] all checks passed ({', '.join(args.era)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
