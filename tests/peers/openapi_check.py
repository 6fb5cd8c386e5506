#!/usr/bin/env python3
"""Checks `callout serve`'s OpenAPI document, independently of the server's own code.

    openapi_check.py http://127.0.0.1:8080

Fetches URL/openapi.json without credentials, validates it with openapi-spec-validator (every
error is listed), and asserts that the expected operations are there, that a bearer security
scheme is declared, and that every /v1 operation requires it while /healthz does not.
Exits 1 on any failure.
"""

from __future__ import annotations

import json
import re
import sys
import urllib.error
import urllib.request

from openapi_spec_validator.shortcuts import get_validator_cls

# (method, path); path parameters match whatever they are named.
EXPECTED = [
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/v1/actions"),
    ("get", "/v1/actions/{name}"),
    ("post", "/v1/actions/{name}/invoke"),
    ("post", "/v1/actions/{name}/test"),
    ("post", "/v1/conversations/{id}/messages"),
    ("post", "/v1/conversations/{id}/end"),
    ("get", "/v1/conversations/{id}"),
]
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def template(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    url = sys.argv[1].rstrip("/") + "/openapi.json"
    failures: list[str] = []

    def fail(msg: str) -> None:
        failures.append(msg)
        print(f"openapi-check FAIL: {msg}", file=sys.stderr)

    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            ctype = resp.headers.get("Content-Type", "")
            spec = json.load(resp)
    except urllib.error.HTTPError as e:
        print(f"openapi-check FAIL: GET {url} without credentials: {e.code} {e.read()[:300]!r}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"openapi-check FAIL: GET {url}: {e}", file=sys.stderr)
        return 1
    if not ctype.startswith("application/json"):
        fail(f"GET {url}: Content-Type {ctype!r}, expected application/json")
    print(f"openapi-check ok: GET {url} without credentials (OpenAPI {spec.get('openapi')!r})")

    errors = list(get_validator_cls(spec)(spec).iter_errors())
    for e in errors[:20]:
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        fail(f"openapi-spec-validator: at {where}: {e.message.splitlines()[0][:300]}")
    if len(errors) > 20:
        fail(f"openapi-spec-validator: {len(errors) - 20} more errors")
    if not errors:
        print("openapi-check ok: the document is valid (openapi-spec-validator)")

    paths = spec.get("paths") or {}
    ops = {(m, template(p)): (p, op) for p, item in paths.items() for m, op in item.items() if m in METHODS}
    missing = [f"{m.upper()} {p}" for m, p in EXPECTED if (m, template(p)) not in ops]
    if missing:
        fail(f"operations missing from the document: {', '.join(missing)}")
    admin = [p for p in paths if p.startswith("/v1/admin/")]
    if not admin:
        fail("no /v1/admin/ operations in the document")
    if not missing and admin:
        print(f"openapi-check ok: the {len(EXPECTED)} expected operations and {len(admin)} admin path(s) are documented")

    schemes = (spec.get("components") or {}).get("securitySchemes") or {}
    bearer = {n for n, s in schemes.items() if s.get("type") == "http" and str(s.get("scheme", "")).lower() == "bearer"}
    if not bearer:
        fail(f"no http bearer security scheme in components.securitySchemes: {schemes!r}")
    top = spec.get("security")
    unprotected = []
    for (m, _), (p, op) in sorted(ops.items()):
        reqs = op.get("security", top) or []
        needs_bearer = bool(reqs) and all(set(r) & bearer for r in reqs)
        if p.startswith("/v1/") and not needs_bearer:
            unprotected.append(f"{m.upper()} {p}")
        if p == "/healthz" and reqs and {} not in reqs:
            fail(f"GET /healthz is documented as needing credentials: {reqs!r}")
    if unprotected:
        fail(f"/v1 operations that do not require the bearer scheme: {', '.join(unprotected)}")
    elif bearer:
        print(f"openapi-check ok: every /v1 operation requires the bearer scheme ({', '.join(sorted(bearer))})")

    if failures:
        print(f"openapi-check: {len(failures)} failure(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
