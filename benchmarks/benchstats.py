"""Summary statistics and small helpers shared by the benchmarks (stdlib only)."""

from __future__ import annotations

import math
import subprocess


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def stats(values: list[float]) -> dict[str, float]:
    """n, p50, p95, mean, min and max of ``values`` (``{"n": 0}`` when empty)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "mean": sum(values) / len(values),
        "min": min(values),
        "max": max(values),
    }


def fmt(value: float | None, width: int = 8, digits: int = 1) -> str:
    """``value`` right-aligned in ``width`` with ``digits`` decimals; '-' for none/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-".rjust(width)
    return f"{value:{width}.{digits}f}"


def run_cmd(argv: list[str]) -> str:
    """What a command printed (stdout, else stderr), or why it could not run."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"? ({err})"
    return out.stdout.strip() or out.stderr.strip()
