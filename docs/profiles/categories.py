#!/usr/bin/env python3
"""Where a call's CPU goes, from a frame-pointer `perf record -g` of the http_overhead bench.

    perf script -i perf.data -F comm,tid,ip,sym > stacks.txt
    python3 docs/profiles/categories.py stacks.txt            # share of samples per part
    python3 docs/profiles/categories.py stacks.txt 'regex'    # what the frame matching regex calls

Each sample goes to the first category (in the order below) that one of its frames matches, so
a category holds everything below its frame (the kernel work of a syscall included).
"""
import collections
import re
import signal
import sys

# Quiet when piped into head.
signal.signal(signal.SIGPIPE, signal.SIG_DFL)

CATEGORIES = [
    ("loading the actions (compile cache, describe)", r"Registry::load|load_or_compile|rayon"),
    ("the back end (axum server, same process)", r"axum::serve"),
    ("reqwest's connection task (hyper client)", r"hyper::client::conn::http1"),
    ("host: outbound-http send (policy, reqwest, audit event)",
     r"outbound_http::Host for callout::state::InstanceState>::send"),
    ("host: other imports (config, log, WASI)", r"HostFn::entrypoint"),
    ("guest: wasm code", r"wasm\[|fiber_start"),
    ("the call's task outside the guest (instantiate, drop, results)",
     r"http_overhead::main::\{\{closure\}\}::\{\{closure\}\}::\{\{closure\}\}|invoke_once"),
    ("audit writer thread (SQLite)", r"audit::Writer"),
    ("tokio: parking, I/O driver", r"park_internal|Driver::turn|park_driver|epoll_wait"),
    ("tokio: scheduling", r"tokio::runtime"),
]


def samples(path):
    cur = None
    for line in open(path, errors="replace"):
        if not line.strip():
            if cur is not None:
                yield cur
            cur = None
        elif line[0] not in " \t":
            cur = [line.split()[0]]
        else:
            parts = line.strip().split(None, 1)
            cur.append(parts[1] if len(parts) > 1 else "?")
    if cur is not None:
        yield cur


def main():
    all_samples = list(samples(sys.argv[1]))
    total = len(all_samples)
    counts = collections.Counter()
    if len(sys.argv) > 2:
        frame = re.compile(sys.argv[2])
        for s in all_samples:
            hits = [i for i, f in enumerate(s[1:], 1) if frame.search(f)]
            if hits:
                i = hits[-1]
                counts[re.sub(r"\+0x[0-9a-f]+", "", s[i - 1]) if i > 1 else "(self)"] += 1
    else:
        for s in all_samples:
            stack = " | ".join(reversed(s[1:]))
            name = next((n for n, p in CATEGORIES if re.search(p, stack)), None)
            counts[name or f"other: {s[0]} {s[1] if len(s) > 1 else ''}"[:80]] += 1
    print(f"{total} samples")
    for name, n in counts.most_common(25):
        print(f"{100 * n / total:6.2f}%  {name[:160]}")


if __name__ == "__main__":
    main()
