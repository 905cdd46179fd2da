"""Derived environments: pinned packages on a pinned base (issue 21), pure.

A catalog entry with ``base`` (another entry's id, or a pinned image) and ``pip`` (exact
pins, ``name==version`` with optional ``--hash=sha256:…``) is an environment that
``jupyter tfenv build`` makes (jupyter_tfenv.backends.docker.builder). This module parses
the pins, refuses floating ones with the fix, merges the base entry's settings, and names
the image before it is built: ``<repository>:v1-<hash>``, where the hash covers the base
image reference, the interpreter and the sorted pins (with their hashes), so the same
inputs give the same tag on every machine and a changed pin a new one. A base pinned by
digest makes the tag cover the base's bits too; a base pinned by tag is recorded (image
id, digest) in the lock file at build time, and ``jupyter tfenv check`` says when it
moved.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from jupyter_tfenv.errors import CatalogError

#: The recipe version: part of every tag, so a change of how images are built changes tags.
RECIPE = "v1"
#: Where built images are tagged when the entry names no ``repository``.
DEFAULT_REPOSITORY = "tfenv-derived"
#: Settings a derived entry never takes from its base entry.
NOT_INHERITED = ("id", "image", "display_name", "description", "pool_size", "preimport")
#: The keys that make an entry derived (not settings of the environment itself).
DERIVED_KEYS = ("base", "pip", "pip_file", "repository")
_HASH_RE = re.compile(r"^--hash[= ](sha256:[0-9a-f]{64})$")
_VERSION_RE = re.compile(r"^[0-9A-Za-z.+!_-]+$")


@dataclass(frozen=True)
class Pin:
    """One exact requirement: ``name==version`` and the sha256 hashes it may have."""

    name: str  # canonical (PEP 503): lower case, '-' separated
    version: str
    hashes: tuple[str, ...] = ()

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"

    def line(self) -> str:
        """The requirements-file line (hashes included)."""
        return " ".join([self.spec, *(f"--hash={h}" for h in self.hashes)])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "hashes": list(self.hashes)}


@dataclass(frozen=True)
class Derived:
    """What a derived environment is made of."""

    #: The base as the catalog wrote it (an entry id or an image reference).
    base: str
    #: The base's image reference (the base entry's image when ``base`` is an id).
    base_image: str
    pins: tuple[Pin, ...]
    repository: str
    #: The base's interpreter (the packages are built for it).
    python: str = "python3"

    @property
    def inputs_hash(self) -> str:
        data = {
            "recipe": RECIPE,
            "base_image": self.base_image,
            "python": self.python,
            "pip": sorted(p.line() for p in self.pins),
        }
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def tag(self) -> str:
        return f"{RECIPE}-{self.inputs_hash[:24]}"

    @property
    def image(self) -> str:
        return f"{self.repository}:{self.tag}"

    def summary(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "base_image": self.base_image,
            "packages": [{"name": p.name, "version": p.version} for p in self.pins],
            "inputs": self.inputs_hash,
        }


def how_to_pin(name: str) -> str:
    return (
        f"Pin it exactly, e.g. '{name}==1.2.3' (`pip index versions {name}` lists the "
        f"versions; `pip download --no-deps {name}==1.2.3` then `pip hash` on the file gives "
        "a '--hash=sha256:…' to add)."
    )


def parse_pin(text: str) -> Pin:
    """``'six==1.16.0 --hash=sha256:…'`` → :class:`Pin`; a floating requirement is refused."""
    if not isinstance(text, str) or not text.strip():
        raise CatalogError("pip: an empty requirement; write 'name==version'.")
    parts = text.split()
    first = next((i for i, part in enumerate(parts) if part.startswith("-")), len(parts))
    head, options = " ".join(parts[:first]), parts[first:]
    hashes = []
    for option in options:
        match = _HASH_RE.match(option)
        if not match:
            raise CatalogError(
                f"pip: '{text}': only '--hash=sha256:<64 hex digits>' may follow the pin "
                f"(not '{option}')."
            )
        hashes.append(match.group(1))
    try:
        req = Requirement(head)
    except InvalidRequirement as err:
        raise CatalogError(f"pip: '{text}' is not a requirement: {err}.") from err
    name = canonicalize_name(req.name)
    if req.url:
        raise CatalogError(
            f"pip: '{text}' installs from a URL, which can change under the same name. "
            + how_to_pin(name)
        )
    if req.extras or req.marker:
        raise CatalogError(
            f"pip: '{text}': extras and markers are not taken (packages are installed "
            "without their dependencies, exactly as listed): list each package the extra "
            f"brings as its own pin. {how_to_pin(name)}"
        )
    specs = list(req.specifier)
    if len(specs) != 1 or specs[0].operator not in ("==", "===") or "*" in specs[0].version:
        what = str(req.specifier) or "no version"
        raise CatalogError(
            f"pip: '{text}' floats ({what}): it can install different bits tomorrow. "
            + how_to_pin(name)
        )
    version = specs[0].version
    if not _VERSION_RE.match(version):
        raise CatalogError(f"pip: '{text}': '{version}' is not a version.")
    return Pin(name=name, version=version, hashes=tuple(sorted(set(hashes))))


def parse_pins(lines: list[str], where: str = "pip") -> tuple[Pin, ...]:
    """All pins, sorted by name; a package listed twice is refused."""
    pins: dict[str, Pin] = {}
    for line in lines:
        pin = parse_pin(line)
        if pin.name in pins:
            raise CatalogError(f"{where}: '{pin.name}' is listed twice; keep one pin.")
        pins[pin.name] = pin
    if not pins:
        raise CatalogError(f"{where}: no packages: list at least one 'name==version'.")
    return tuple(pins[name] for name in sorted(pins))


def read_pip_file(path: str, catalog_source: str) -> list[str]:
    """The requirement lines of ``pip_file`` (relative to the catalog file's folder).

    Comments and blank lines are skipped; a trailing backslash continues a line
    (``pip-compile --generate-hashes`` writes hashes so).
    """
    base = Path(catalog_source).parent if Path(catalog_source).is_file() else None
    target = Path(path)
    if not target.is_absolute():
        if base is None:
            raise CatalogError(
                f"pip_file: '{path}' is relative, and only an entry in a catalog file has a "
                "folder to read it from; give an absolute path."
            )
        target = base / target
    try:
        text = target.read_text(encoding="utf-8")
    except OSError as err:
        raise CatalogError(f"pip_file: cannot read {target}: {err.strerror or err}.") from err
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            lines.append(" ".join(current.split()))
        current = ""
    if current.strip():
        lines.append(" ".join(current.split()))
    return lines


def derive(raw: dict[str, Any], base_raw: dict[str, Any] | None, base_image: str) -> Derived:
    """The :class:`Derived` of a raw entry; ``base_raw`` is the base entry's config (or None
    when the base is an image reference)."""
    lines = list(raw.get("pip") or [])
    if "pip_file" in raw:
        lines += read_pip_file(raw["pip_file"], raw.get("_source", ""))
    where = "pip_file" if "pip_file" in raw and not raw.get("pip") else "pip"
    pins = parse_pins(lines, where)
    repository = raw.get("repository") or f"{DEFAULT_REPOSITORY}/{raw['id']}"
    python = raw.get("python") or (base_raw or {}).get("python") or "python3"
    return Derived(
        base=raw["base"], base_image=base_image, pins=pins, repository=repository, python=python
    )


def merged_entry(raw: dict[str, Any], base_raw: dict[str, Any] | None) -> dict[str, Any]:
    """The derived entry's settings: the base entry's (``to_config()``), overridden by its own."""
    merged = {k: v for k, v in (base_raw or {}).items() if k not in NOT_INHERITED}
    merged.update({k: v for k, v in raw.items() if not k.startswith("_")})
    return merged


def display_name(base_display: str, pins: tuple[Pin, ...]) -> str:
    """``TensorFlow 2.13.0 (CPU) + 3 packages``."""
    count = len(pins)
    return f"{base_display} + {count} package{'s' if count != 1 else ''}"
