"""What the in-image probe (``in_container/probe.py``) prints, and the answer made of it.

Shared by every backend that runs the probe: a Docker container or a Kubernetes pod runs the
same script and reads its last JSON line the same way.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jupyter_tfenv.catalog.model import Environment

PROBE_SCRIPT_PATH = Path(__file__).parent / "in_container" / "probe.py"
#: Bumped when the probe's output changes, so that older cache files are probed again.
PROBE_VERSION = 3


def probe_result(
    env: Environment,
    facts: dict[str, Any],
    gpu_state: dict[str, str],
    image_id: str,
    started: float,
) -> dict[str, Any]:
    """The probe's answer: its facts, the GPU state, which image, when, how long."""
    return {
        **facts,
        "gpu_state": gpu_state,
        "image_id": image_id,
        "image": env.image,
        "environment": env.id,
        "probed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 3),
        "probe_version": PROBE_VERSION,
        "cached": False,
    }


def probe_facts(stdout: str) -> dict[str, Any] | None:
    """The facts the probe script printed (its last JSON line), or None."""
    for line in reversed(stdout.splitlines()):
        text = line.strip()
        if text.startswith("{"):
            try:
                facts = json.loads(text)
            except ValueError:
                return None
            if isinstance(facts, dict):
                facts.setdefault("errors", {})
                facts.setdefault("seconds", {})
                return facts
            return None
    return None


def no_result_message(env: Environment) -> str:
    return f"The probe of '{env.id}' printed no result (is '{env.python}' a Python 3 interpreter?)."


def package_changes(
    base: dict[str, str] | None, image: dict[str, str] | None
) -> dict[str, Any] | None:
    """What an image holds beyond its base (both probes' ``packages``): ``added`` and
    ``changed`` (name → version, name → [base's, image's]) and ``removed`` (names); None
    when either probe has no package list (Python before 3.8)."""
    if base is None or image is None:
        return None
    return {
        "added": {k: v for k, v in image.items() if k not in base},
        "changed": {k: [base[k], v] for k, v in image.items() if k in base and base[k] != v},
        "removed": sorted(k for k in base if k not in image),
    }
