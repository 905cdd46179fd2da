"""Image references: parsing and the pinning policy.

Parsing is the docker SDK's (``docker.utils.parse_repository_tag`` and
``docker.auth.resolve_repository_name``), which knows registries with ports, nested
paths and digests; string splitting on ``:`` gets ``localhost:5000/team/tf`` wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from docker.auth import resolve_repository_name
from docker.errors import InvalidRepository
from docker.utils import parse_repository_tag

from jupyter_tfenv.errors import PinningError

#: Pinning policies: ``tags`` refuses floating tags, ``digests`` accepts only
#: ``repo@sha256:…``, ``any`` accepts everything (not recommended).
PINNING_POLICIES = ("tags", "digests", "any")

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# Tags that move by design. A tag without any digit (``gpu``, ``jupyter``, ``stable``)
# names a flavour, not a version, so it floats too.
_FLOATING_WORD_RE = re.compile(
    r"(^|[-_.])(latest|nightly|edge|head|main|master|stable|rolling)([-_.]|$)", re.IGNORECASE
)
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference."""

    original: str
    repository: str  # e.g. "localhost:5000/team/tensorflow"
    registry: str  # e.g. "localhost:5000" or "index.docker.io"
    tag: str | None  # e.g. "2.20.0-gpu-jupyter"
    digest: str | None  # e.g. "sha256:…"

    @property
    def pinned_by_digest(self) -> bool:
        return self.digest is not None

    @property
    def short(self) -> str:
        """Repository plus tag or short digest, for display."""
        if self.digest:
            return f"{self.repository}@{self.digest[:19]}"
        return f"{self.repository}:{self.tag}" if self.tag else self.repository


def parse_image_ref(ref: str) -> ImageRef:
    """Parse ``ref``; raise ``PinningError`` when it is not a valid reference at all."""
    if not isinstance(ref, str) or not ref.strip() or ref != ref.strip():
        raise PinningError(f"'{ref}' is not an image reference (no spaces, not empty).")
    repository, tag_or_digest = parse_repository_tag(ref)
    digest = tag = None
    if tag_or_digest is not None:
        if "@" in ref:
            digest = tag_or_digest
            if not _DIGEST_RE.match(digest):
                raise PinningError(
                    f"'{ref}' has a malformed digest: expected 'sha256:' and 64 hex digits."
                )
            # "repo:tag@sha256:…" is valid: the digest wins, the tag is informative.
            if ":" in repository.rsplit("/", 1)[-1]:
                repository, tag = repository.rsplit(":", 1)
        else:
            tag = tag_or_digest
            if not _TAG_RE.match(tag):
                raise PinningError(f"'{ref}' has an invalid tag '{tag}'.")
    if not repository or repository != repository.lower():
        raise PinningError(
            f"'{ref}' is not a valid image reference: repository names are lower case."
        )
    try:
        registry, _name = resolve_repository_name(repository)
    except InvalidRepository as err:
        raise PinningError(f"'{ref}' is not a valid image reference: {err}") from err
    return ImageRef(original=ref, repository=repository, registry=registry, tag=tag, digest=digest)


def is_floating_tag(tag: str | None) -> bool:
    """True for tags that move over time: none, ``latest``, ``nightly``, digit-less flavours."""
    if tag is None:
        return True
    if _FLOATING_WORD_RE.search(tag):
        return True
    return not any(ch.isdigit() for ch in tag)


def check_pinned(ref: str, policy: str = "tags") -> ImageRef:
    """Return the parsed ``ref`` if ``policy`` accepts it, else raise ``PinningError``.

    The message tells how to pin, since that is what the person has to do next.
    """
    if policy not in PINNING_POLICIES:
        raise PinningError(
            f"Unknown pinning policy '{policy}': use one of {', '.join(PINNING_POLICIES)}."
        )
    parsed = parse_image_ref(ref)
    if policy == "any" or parsed.pinned_by_digest:
        return parsed
    how = (
        f"Pin it to a digest, e.g. '{parsed.repository}@sha256:<64 hex digits>' "
        f"(`docker inspect --format '{{{{index .RepoDigests 0}}}}' {ref}` prints it)"
    )
    if policy == "digests":
        raise PinningError(
            f"Image '{ref}' is not pinned by digest, and the catalog requires digests "
            f"(pinning: digests). {how}."
        )
    if is_floating_tag(parsed.tag):
        what = (
            "has no tag (Docker reads that as ':latest')"
            if parsed.tag is None
            else (f"uses the floating tag '{parsed.tag}'")
        )
        raise PinningError(
            f"Image '{ref}' {what}, which can point to different bits tomorrow. "
            f"Pin a version tag such as '{parsed.repository}:2.20.0-jupyter', or {how[0].lower()}"
            f"{how[1:]}."
        )
    return parsed
