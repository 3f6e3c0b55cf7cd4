#!/usr/bin/env python3
"""Allocations per request by call site, from a valgrind --tool=dhat file.

    bench/alloc_sites.py DHAT_OUT REQUESTS [TOP]

Each row: allocations and bytes per request, then the first frames outside
the allocator and the standard library (generics elided), so that
`Vec::reserve` under `askama::render` reads as the render. Sites under
0.05 allocations per request (start-up, timers, the store's poll) are left
out. Used by bench/allocations.sh.
"""
import collections
import json
import re
import sys

PLUMBING = re.compile(
    r"\((library/|src/raw/|src/map\.rs|[^)]*rustc/)|^(malloc|realloc|calloc|alloc|UnknownInlinedFun \(library)"
)
# Growing and copying helpers, named as they are after generics are elided.
GROWING = re.compile(
    r"(^|::)(finish_grow|grow_amortized|grow_one|try_reserve|reserve|do_reserve_and_handle|push|push_str"
    r"|extend_from_slice|extend|write_str|write_all|with_capacity|to_vec|to_owned|clone) "
)


def generic_free(frame):
    previous = None
    while previous != frame:
        previous, frame = frame, re.sub(r"<[^<>]*>", "", frame)
    return frame


def main():
    path, requests = sys.argv[1], float(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    with open(path) as f:
        dhat = json.load(f)
    frames = dhat["ftbl"]
    sites = collections.defaultdict(lambda: [0.0, 0.0])
    for pp in dhat["pps"]:
        names = [frames[i].split(": ", 1)[-1] for i in pp["fs"]]
        own = [
            g
            for n, g in ((n, generic_free(n)) for n in names)
            if not PLUMBING.search(n) and not GROWING.search(g) and "[root]" not in n
        ]
        key = " < ".join(g[:60] for g in own[:3]) or "(allocator only)"
        sites[key][0] += pp["tbk"] / requests
        sites[key][1] += pp["tb"] / requests
    rows = sorted(sites.items(), key=lambda kv: -kv[1][0])
    shown = [(k, v) for k, v in rows if v[0] >= 0.05]
    print(f"allocations per request: {sum(v[0] for _, v in rows):.1f} "
          f"({sum(v[0] for _, v in shown):.1f} at sites of 0.05 or more)")
    print("| per request | bytes | where (first frames outside std) |")
    print("|---:|---:|---|")
    for key, (count, size) in shown[:top]:
        print(f"| {count:.2f} | {size:.0f} | `{key}` |")


if __name__ == "__main__":
    main()
