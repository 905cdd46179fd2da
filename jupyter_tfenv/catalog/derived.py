"""Derived environments: pinned packages on a pinned base (issue 21), pure.

A catalog entry with ``base`` (another entry's id, which may itself be derived, or a pinned
image) and ``pip`` (exact pins, ``name==version`` with optional ``--hash=sha256:…``) is an
environment that ``jupyter tfenv build`` makes (jupyter_tfenv.backends.docker.builder).
This module parses the pins, refuses floating ones with the fix, merges the base entry's
settings, orders chains of derived entries (a cycle is refused, naming its entries), and
names the image.

The image's tag is its content: ``<repository>:v2-<hash>``, where the hash covers the
base image's digest and the resolved requirement set (the pins and their dependencies,
each ``name==version --hash=sha256:…``). Both are known only after ``jupyter tfenv build``
resolved them, which records them in the lock file (``resolved``, by entry id, with the
hash of the entry's own inputs: base reference, interpreter, pins). The catalog reads that
record: while it matches the entry's inputs, the entry names the built tag; an entry
without a matching record is named ``<repository>:unbuilt-<inputs>``, which no image has,
so a kernel start says to build it. The same lock gives the same tag on every machine.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from jupyter_tfenv.errors import CatalogError

#: The recipe version: part of every tag, so a change of how images are built changes tags.
RECIPE = "v2"
#: The tag prefix of an entry whose resolution is not recorded (never an image's tag).
UNBUILT = "unbuilt"
#: Where built images are tagged when the entry names no ``repository``.
DEFAULT_REPOSITORY = "tfenv-derived"
#: Settings a derived entry never takes from its base entry.
NOT_INHERITED = ("id", "image", "display_name", "description", "pool_size", "preimport")
#: The keys that make an entry derived (not settings of the environment itself).
DERIVED_KEYS = ("base", "pip", "pip_file", "repository", "resolved")
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


def content_tag(base_digest: str, resolved: tuple[str, ...] | list[str]) -> str:
    """The tag of an image made of ``base_digest`` and the resolved lines
    (``name==version --hash=sha256:…``): the same bits in, the same tag out."""
    data = {"recipe": RECIPE, "base_digest": base_digest, "pip": sorted(resolved)}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return f"{RECIPE}-{hashlib.sha256(text.encode()).hexdigest()[:24]}"


@dataclass(frozen=True)
class Resolution:
    """What ``jupyter tfenv build`` resolved for an entry (the lock file's ``resolved[id]``)."""

    #: The hash of the entry's inputs it was resolved for (:attr:`Derived.inputs_hash`).
    inputs: str
    #: The wheel target (``cp311-glibc2.36-x86_64``).
    target: str
    base_image: str
    #: The base's repository digest (from the lock or the engine), or its image id.
    base_digest: str
    #: Every package the build installs: ``name==version --hash=sha256:…``, sorted.
    pip: tuple[str, ...]

    @property
    def tag(self) -> str:
        return content_tag(self.base_digest, self.pip)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "target": self.target,
            "base_image": self.base_image,
            "base_digest": self.base_digest,
            "pip": list(self.pip),
            "tag": self.tag,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Resolution | None:
        """The record, or None when it is not one (a hand-edited or older lock file)."""
        if not isinstance(data, dict):
            return None
        pip = data.get("pip")
        fields = [data.get(k) for k in ("inputs", "target", "base_image", "base_digest")]
        if not all(isinstance(f, str) and f for f in fields) or not isinstance(pip, list):
            return None
        if not all(isinstance(line, str) and " --hash=sha256:" in line for line in pip):
            return None
        inputs, target, base_image, base_digest = (str(f) for f in fields)
        return cls(inputs, target, base_image, base_digest, tuple(sorted(pip)))

    def specs(self) -> dict[str, str]:
        """``{name: version}`` of the resolved set."""
        out = {}
        for line in self.pip:
            name, _, version = line.split(" ", 1)[0].partition("==")
            out[name] = version
        return out


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
    #: The lock file's resolution of these inputs, None when there is none (not built).
    resolution: Resolution | None = None
    #: The base entry's id when it is itself derived (a chain, built base first).
    parent: str | None = None

    @property
    def inputs_hash(self) -> str:
        """The entry's own inputs: what a resolution in the lock file must have been for."""
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
        if self.resolution is not None:
            return self.resolution.tag
        return f"{UNBUILT}-{self.inputs_hash[:24]}"

    @property
    def image(self) -> str:
        return f"{self.repository}:{self.tag}"

    def summary(self) -> dict[str, Any]:
        res = self.resolution
        return {
            "base": self.base,
            "base_image": self.base_image,
            "packages": [{"name": p.name, "version": p.version} for p in self.pins],
            "inputs": self.inputs_hash,
            "resolved": None
            if res is None
            else [{"name": n, "version": v} for n, v in sorted(res.specs().items())],
            "base_digest": None if res is None else res.base_digest,
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
            "by name and version only): list each package the extra brings as its own pin. "
            f"{how_to_pin(name)}"
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


def derive(
    raw: dict[str, Any],
    base_raw: dict[str, Any] | None,
    base_image: str,
    parent: str | None = None,
) -> Derived:
    """The :class:`Derived` of a raw entry; ``base_raw`` is the base entry's config (or None
    when the base is an image reference), ``parent`` the base entry's id when it is derived.
    ``raw["resolved"]`` (the lock file's record) names the tag when it matches the inputs."""
    lines = list(raw.get("pip") or [])
    if "pip_file" in raw:
        lines += read_pip_file(raw["pip_file"], raw.get("_source", ""))
    where = "pip_file" if "pip_file" in raw and not raw.get("pip") else "pip"
    pins = parse_pins(lines, where)
    repository = raw.get("repository") or f"{DEFAULT_REPOSITORY}/{raw['id']}"
    python = raw.get("python") or (base_raw or {}).get("python") or "python3"
    derived = Derived(
        base=raw["base"],
        base_image=base_image,
        pins=pins,
        repository=repository,
        python=python,
        parent=parent,
    )
    resolution = Resolution.from_dict(raw.get("resolved"))
    if resolution is not None and resolution.inputs == derived.inputs_hash:
        derived = replace(derived, resolution=resolution)
    return derived


def merged_entry(raw: dict[str, Any], base_raw: dict[str, Any] | None) -> dict[str, Any]:
    """The derived entry's settings: the base entry's (``to_config()``), overridden by its own."""
    merged = {k: v for k, v in (base_raw or {}).items() if k not in NOT_INHERITED + DERIVED_KEYS}
    merged.update({k: v for k, v in raw.items() if not k.startswith("_")})
    return merged


def display_name(base_display: str, pins: tuple[Pin, ...], inherited: int = 0) -> str:
    """``TensorFlow 2.13.0 (CPU) + 3 packages`` (``inherited``: the packages of the derived
    bases of a chain, counted too)."""
    count = len(pins) + inherited
    return f"{base_display} + {count} package{'s' if count != 1 else ''}"


def order_entries(
    entries: list[tuple[Any, dict[str, Any]]],
) -> tuple[list[tuple[Any, dict[str, Any]]], dict[str, list[str]]]:
    """``(key, raw)`` pairs in loading order: every entry after the entry its ``base`` names
    (plain entries first, then chains base first), and the entries on a cycle of bases
    (``{id: [ids of the cycle, in order]}``, left out of the order)."""
    plain = [item for item in entries if "base" not in item[1]]
    derived = [item for item in entries if "base" in item[1]]
    by_id: dict[str, tuple[Any, dict[str, Any]]] = {}
    for item in derived:
        if isinstance(item[1].get("id"), str):
            by_id.setdefault(item[1]["id"], item)
    ordered: list[tuple[Any, dict[str, Any]]] = []
    done: set[int] = set()
    cycles: dict[str, list[str]] = {}

    def visit(item: tuple[Any, dict[str, Any]], path: list[str]) -> None:
        if id(item) in done:
            return
        own = item[1].get("id")
        if isinstance(own, str) and own in path:
            cycle = path[path.index(own) :]
            for member in cycle:
                cycles.setdefault(member, cycle)
            return
        base = item[1].get("base")
        parent = by_id.get(base) if isinstance(base, str) else None
        if parent is not None and parent is not item:
            visit(parent, [*path, own] if isinstance(own, str) else path)
        elif parent is item:
            cycles.setdefault(str(own), [str(own)])
        if id(item) not in done and not (isinstance(own, str) and own in cycles):
            done.add(id(item))
            ordered.append(item)

    for item in derived:
        visit(item, [])
    return plain + ordered, cycles


def cycle_message(cycle: list[str]) -> str:
    chain = " → ".join(f"'{member}'" for member in [*cycle, cycle[0]])
    return (
        f"base: the entries {chain} name each other as base, a cycle that cannot be built; "
        "let one of them name a plain entry or an image."
    )
