#!/usr/bin/env python3
"""Where two callgrind profiles of meshgate differ, per request.

    python3 bench/callgrind_diff.py A.out B.out [--requests 4000] [--top 40]
    python3 bench/callgrind_diff.py A.out B.out --callers FUNCTION
    python3 bench/callgrind_diff.py A.out B.out --event ILmr --requests N

Both profiles come from `CALLGRIND_OUT=FILE bash bench/instructions.sh ...` (the same request
count in each). The first form lists the functions whose own instructions (callees excluded)
differ most from A to B, per request; code the JIT compiled (a plugin's guest code) has no
symbol and shows as an address. The second form lists, for FUNCTION (a substring of its name,
e.g. `__memcpy_avx_unaligned_erms` or `__rust_alloc`), how many more calls per request each of
its callers makes in B, and the instructions those calls cost. `--event` compares another of
the profiles' events instead of instructions: with `--cache-sim=yes` profiles, `I1mr`/`ILmr`
(instruction cache lines missed in L1 / the last level), `D1mr`, `DLmr`, `DLmw` and so on; two
profiles of `stream_cost` with different stream counts then give the misses of one stream
(`--requests` the difference in streams; the JIT may place guest code at other addresses in
the two runs, so its functions are compared in total, not one by one). Needs valgrind's
callgrind_annotate.
"""

import argparse
import collections
import re
import subprocess
import sys

# "  1,234 (0.50%)  file:function [binary]" (exclusive listing), or the same with "<" or "*"
# before the file in a caller tree, and " (12x)" after the function for a call count.
LINE = re.compile(r"^\s*([\d,]+)\s+\([^)]*\)\s+([<*>]\s+)?(.*?)(?: \((\d[\d,]*)x\))?(?: \[[^\]]*\])?\s*$")


def annotate(path, *args):
    out = subprocess.run(["callgrind_annotate", *args, path], check=True, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
    # The per-function part ends where the source annotations begin.
    return out.split("-- Auto-annotated source")[0].splitlines()


def function_name(location):
    # "file:function", where the file may be "???" or a path; a JIT address has no file.
    _, sep, name = location.partition(":")
    return name if sep else location


def exclusive(path, event):
    costs = collections.Counter()
    for line in annotate(path, "--inclusive=no", "--threshold=100", f"--show={event}"):
        m = LINE.match(line)
        if m and not m.group(2) and "PROGRAM TOTALS" not in line:
            costs[function_name(m.group(3))] += int(m.group(1).replace(",", ""))
    return costs


def callers(path, needle):
    """{caller: [instructions, calls]} of the calls into functions whose name has `needle`."""
    found = collections.defaultdict(lambda: [0, 0])
    pending = []
    for line in annotate(path, "--tree=caller", "--inclusive=yes", "--threshold=100"):
        m = LINE.match(line)
        if not m or not m.group(2):
            pending = []
            continue
        mark = m.group(2).strip()
        if mark == "<":
            pending.append(m)
        elif mark == "*":
            if needle in function_name(m.group(3)):
                for c in pending:
                    entry = found[function_name(c.group(3))]
                    entry[0] += int(c.group(1).replace(",", ""))
                    entry[1] += int((c.group(4) or "0").replace(",", ""))
            pending = []
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--requests", type=int, default=4000, help="requests in each profile")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--callers", metavar="FUNCTION")
    ap.add_argument("--event", default="Ir", help="the event compared (default Ir: instructions)")
    args = ap.parse_args()
    n = args.requests
    if args.callers:
        a, b = callers(args.a, args.callers), callers(args.b, args.callers)
        rows = []
        for k in set(a) | set(b):
            (ia, ca), (ib, cb) = a.get(k, [0, 0]), b.get(k, [0, 0])
            rows.append(((cb - ca) / n, (ib - ia) / n, k))
        rows.sort(reverse=True)
        print(f"calls into *{args.callers}*, B - A per request: calls, instructions, caller")
        for calls, instr, k in rows:
            if abs(calls) >= 0.01:
                print(f"{calls:8.2f} {instr:9.1f}  {k[:140]}")
        return 0
    a, b = exclusive(args.a, args.event), exclusive(args.b, args.event)
    rows = sorted((((b[k] - a[k]) / n, k) for k in set(a) | set(b)), reverse=True)
    total = (sum(b.values()) - sum(a.values())) / n
    what = "instructions" if args.event == "Ir" else args.event
    print(f"own {what}, B - A per request (listed functions in all: {total:+.0f})")
    shown = rows[: args.top] + [r for r in rows[-10:] if r[0] < 0 and r not in rows[: args.top]]
    for d, k in shown:
        print(f"{d:9.1f}  {k[:140]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
