#!/usr/bin/env python3
"""Fail when a Python module of the package is over the size limit without a stated reason.

A module over ``LIMIT`` lines must say why in a comment of its own, near the top, starting
with ``# Longer than 600 lines:`` (docs/ARCHITECTURE.md, "Layers"). Prints every module over
the limit, with its reason or the missing one; exits 1 when a reason is missing.
"""

from __future__ import annotations

import sys
from pathlib import Path

LIMIT = 600
MARK = "# Longer than 600 lines:"


def main() -> int:
    root = Path(__file__).resolve().parents[1] / "jupyter_tfenv"
    missing = 0
    for path in sorted(root.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) <= LIMIT:
            continue
        reason = next((line for line in lines[:80] if line.startswith(MARK)), None)
        rel = path.relative_to(root.parent)
        if reason:
            print(f"{rel}: {len(lines)} lines ({reason[len(MARK) :].strip()})")
        else:
            missing += 1
            print(f"{rel}: {len(lines)} lines, over {LIMIT} without a reason: split it by")
            print(f"  concern, or say why it is one piece in a '{MARK} ...' comment at its top")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
