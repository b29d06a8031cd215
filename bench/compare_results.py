"""Two results.json files (or any two JSON reports) compared field by field, timings aside: what a refactor that
must not change a number is checked with.

    python bench/compare_results.py BEFORE/results.json AFTER/results.json     # exit 1 where a field differs

Skipped: every key holding "seconds", and the run's `command`, `machine`, `versions` and `prebuild` records. Each
difference is printed as added / removed / changed with its dotted path.
"""

from __future__ import annotations

import argparse
import json
import sys

RUN_RECORDS = ("command", "machine", "versions", "prebuild")


def differences(a, b, path: str = "") -> list[tuple]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            p = f"{path}.{k}" if path else k
            if "seconds" in k or (not path and k in RUN_RECORDS):
                continue
            if k not in a:
                out.append(("added", p, b[k]))
            elif k not in b:
                out.append(("removed", p, a[k]))
            else:
                out += differences(a[k], b[k], p)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (u, v) in enumerate(zip(a, b, strict=True)) for d in differences(u, v, f"{path}[{i}]")]
    return [] if a == b else [("changed", path, a, b)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before")
    parser.add_argument("after")
    args = parser.parse_args()
    with open(args.before) as f, open(args.after) as g:
        found = differences(json.load(f), json.load(g))
    for d in found:
        print(*d[:2], *(json.dumps(v)[:200] for v in d[2:]))
    print(f"{len(found)} difference(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
