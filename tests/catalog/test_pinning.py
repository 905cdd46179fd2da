"""Image references and the pinning policy (pure logic)."""

from __future__ import annotations

import pytest

from jupyter_tfenv.catalog.images import check_pinned, is_floating_tag, parse_image_ref
from jupyter_tfenv.errors import PinningError

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("ref", "repository", "registry", "tag", "digest"),
    [
        (
            "tensorflow/tensorflow:2.20.0-gpu-jupyter",
            "tensorflow/tensorflow",
            "docker.io",
            "2.20.0-gpu-jupyter",
            None,
        ),
        (
            "localhost:5000/team/tf:2.19.0",
            "localhost:5000/team/tf",
            "localhost:5000",
            "2.19.0",
            None,
        ),
        (
            "registry.example.com:8443/a/b/c/tf:1.0",
            "registry.example.com:8443/a/b/c/tf",
            "registry.example.com:8443",
            "1.0",
            None,
        ),
        (f"tensorflow/tensorflow@{DIGEST}", "tensorflow/tensorflow", "docker.io", None, DIGEST),
        (
            f"localhost:5000/tf:2.20.0@{DIGEST}",
            "localhost:5000/tf",
            "localhost:5000",
            "2.20.0",
            DIGEST,
        ),
    ],
)
def test_parse_handles_ports_paths_and_digests(ref, repository, registry, tag, digest):
    parsed = parse_image_ref(ref)
    assert (parsed.repository, parsed.registry, parsed.tag, parsed.digest) == (
        repository,
        registry,
        tag,
        digest,
    )


@pytest.mark.parametrize(
    "ref",
    [
        "tensorflow/tensorflow:2.20.0-jupyter",
        "localhost:5000/team/tf:2024.05",
        "internal/tf:team-v3",
        f"tensorflow/tensorflow@{DIGEST}",
    ],
)
def test_pinned_references_are_accepted(ref):
    assert check_pinned(ref).original == ref


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        ("tensorflow/tensorflow:latest", "floating tag 'latest'"),
        ("tensorflow/tensorflow", "has no tag"),
        ("localhost:5000/team/tf", "has no tag"),
        ("tensorflow/tensorflow:latest-gpu-jupyter", "floating tag"),
        ("tensorflow/tensorflow:gpu-jupyter", "floating tag 'gpu-jupyter'"),
        ("tensorflow/tensorflow:nightly", "floating tag 'nightly'"),
        ("team/tf:stable", "floating tag 'stable'"),
    ],
)
def test_floating_references_are_refused_with_how_to_pin(ref, words):
    with pytest.raises(PinningError) as info:
        check_pinned(ref)
    message = str(info.value)
    assert words in message
    # The message says how to pin: a version tag or a digest, and how to find the digest.
    assert "Pin a version tag" in message
    assert "@sha256:" in message
    assert "RepoDigests" in message


def test_digest_policy_requires_digests():
    with pytest.raises(PinningError, match="requires digests"):
        check_pinned("tensorflow/tensorflow:2.20.0-jupyter", "digests")
    assert check_pinned(f"tensorflow/tensorflow@{DIGEST}", "digests").digest == DIGEST


def test_any_policy_accepts_floating_tags():
    assert check_pinned("tensorflow/tensorflow:latest", "any").tag == "latest"


@pytest.mark.parametrize(
    "ref", ["", " tf:1", "Tensorflow/TF:1.0", "tf@sha256:123", "tf:-bad", "tf:a b"]
)
def test_invalid_references_are_errors(ref):
    with pytest.raises(PinningError):
        check_pinned(ref)


def test_floating_tag_rules():
    assert is_floating_tag(None)
    assert is_floating_tag("latest")
    assert is_floating_tag("jupyter")
    assert not is_floating_tag("2.20.0-jupyter")
    assert not is_floating_tag("2.20.0rc1-gpu")
