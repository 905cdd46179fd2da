"""Derived catalog entries (issue 21, layer 1): base + exact pins, pure (no engine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from jupyter_tfenv.catalog.derived import content_tag, order_entries, parse_pin
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.catalog.lock import LockFile, LockMissingError, require_lock
from jupyter_tfenv.catalog.validation import environment_from_dict
from jupyter_tfenv.errors import CatalogError
from jupyter_tfenv.kernels.probe_output import package_changes

BASE = {
    "id": "tf213",
    "image": "tensorflow/tensorflow:2.13.0-jupyter",
    "gpus": 1,
    "resources": {"memory": "8g", "shm_size": "1g"},
    "env": {"TF_CPP_MIN_LOG_LEVEL": "2"},
    "idle_timeout": 600,
    "pool_size": 2,
}
SHA = "sha256:" + "a" * 64


def _derive(**entry: Any) -> Any:
    base = environment_from_dict(BASE)
    return environment_from_dict({"id": "ds", "base": "tf213", **entry}, bases={"tf213": base})


def test_derived_entry_inherits_the_base_and_is_named_by_content() -> None:
    env = _derive(pip=["six==1.16.0", "Tomli==2.0.1"])
    # Not resolved yet (no lock record): a name no image has, so a start says to build it.
    assert env.image.startswith("tfenv-derived/ds:unbuilt-")
    assert env.display_name == "TensorFlow 2.13.0 (1 GPU) + 2 packages"
    assert (env.gpus, env.memory, env.shm_size, env.idle_timeout) == (1, 8 * 1024**3, 1024**3, 600)
    assert env.env == {"TF_CPP_MIN_LOG_LEVEL": "2"}
    assert env.pool_size == 0  # a pool is the entry's own choice, never inherited
    assert env.tensorflow == "2.13.0"
    assert env.derived is not None
    assert [p.spec for p in env.derived.pins] == ["six==1.16.0", "tomli==2.0.1"]
    assert env.summary()["derived"]["packages"] == [
        {"name": "six", "version": "1.16.0"},
        {"name": "tomli", "version": "2.0.1"},
    ]


def test_overrides_win_over_the_base() -> None:
    env = _derive(pip=["six==1.16.0"], gpus="none", display_name="Data science")
    assert env.gpus == "none"
    assert env.display_name == "Data science"


def _resolved(env: Any, digest: str = "sha256:" + "1" * 64, **extra: Any) -> dict[str, Any]:
    """A lock record of ``env``'s inputs: six and its resolved dependency."""
    return {
        "inputs": env.derived.inputs_hash,
        "target": "cp311-glibc2.36-x86_64",
        "base_image": env.derived.base_image,
        "base_digest": digest,
        "pip": [f"six==1.16.0 --hash={SHA}", "zipp==3.20.0 --hash=sha256:" + "c" * 64],
        **extra,
    }


def test_same_inputs_same_tag_changed_pin_new_tag() -> None:
    one = _derive(pip=["six==1.16.0", "tomli==2.0.1"])
    again = _derive(pip=["tomli==2.0.1", "SIX==1.16.0"])  # order and case do not matter
    assert one.image == again.image
    assert one.derived.inputs_hash == again.derived.inputs_hash
    assert _derive(pip=["six==1.16.0", "tomli==2.0.2"]).image != one.image
    assert _derive(pip=["six==1.16.0", f"tomli==2.0.1 --hash={SHA}"]).image != one.image


def test_the_tag_is_the_base_digest_and_the_resolved_set() -> None:
    pending = _derive(pip=["six==1.16.0"])
    record = _resolved(pending)
    built = _derive(pip=["six==1.16.0"], resolved=record)
    assert built.derived is not None and built.derived.resolution is not None
    tag = content_tag(record["base_digest"], record["pip"])
    assert built.image == f"tfenv-derived/ds:{tag}" and tag.startswith("v2-")
    # The same resolution on another machine: the same tag; the set's order does not matter.
    swapped = {**record, "pip": list(reversed(record["pip"]))}
    assert _derive(pip=["six==1.16.0"], resolved=swapped).image == built.image
    # A re-pointed base (another digest) or another resolved dependency: a new tag.
    moved = _resolved(pending, digest="sha256:" + "2" * 64)
    assert _derive(pip=["six==1.16.0"], resolved=moved).image != built.image
    newer = {**record, "pip": [record["pip"][0], "zipp==3.21.0 --hash=sha256:" + "d" * 64]}
    assert _derive(pip=["six==1.16.0"], resolved=newer).image != built.image
    # A record of other inputs (a pin changed since) names nothing: not built.
    other = _derive(pip=["six==1.15.0"], resolved=record)
    assert other.image.startswith("tfenv-derived/ds:unbuilt-")
    assert other.derived is not None and other.derived.resolution is None
    summary = built.summary()["derived"]
    assert summary["resolved"] == [
        {"name": "six", "version": "1.16.0"},
        {"name": "zipp", "version": "3.20.0"},
    ]


def test_image_base() -> None:
    env = environment_from_dict(
        {"id": "x", "base": "tensorflow/tensorflow:2.13.0-jupyter", "pip": ["six==1.16.0"]}
    )
    assert env.display_name == "TensorFlow 2.13.0 (CPU) + 1 package"
    assert env.derived is not None and env.derived.base_image == env.derived.base


@pytest.mark.parametrize(
    ("pins", "words"),
    [
        (["six>=1.16"], "'six>=1.16' floats"),
        (["six"], "'six' floats (no version)"),
        (["six==1.*"], "floats"),
        (["six~=1.16"], "floats"),
        (["six[x]==1.16.0"], "extras and markers"),
        (["six @ https://example.com/six.whl"], "from a URL"),
        (["six==1.16.0 --index-url=x"], "only '--hash=sha256:"),
        (["six==1.16.0", "Six==1.15.0"], "listed twice"),
        ([], "no packages"),
    ],
)
def test_floating_or_odd_pins_are_refused_with_the_fix(pins: list[str], words: str) -> None:
    with pytest.raises(CatalogError) as err:
        _derive(pip=pins)
    assert words in str(err.value)
    assert str(err.value).startswith("pip")
    if "floats" in words:
        assert "Pin it exactly, e.g. 'six==1.2.3'" in str(err.value)


def test_bad_bases_are_refused() -> None:
    with pytest.raises(CatalogError, match="neither an entry of the catalog"):
        _derive(base="nope", pip=["six==1.16.0"])
    with pytest.raises(CatalogError, match=r"^base: Image 'tensorflow/tensorflow:latest'"):
        environment_from_dict(
            {"id": "x", "base": "tensorflow/tensorflow:latest", "pip": ["six==1.16.0"]}
        )
    with pytest.raises(CatalogError, match=r"^image: a derived environment's image"):
        _derive(pip=["six==1.16.0"], image="tensorflow/tensorflow:2.13.0-jupyter")


def test_a_derived_base_makes_a_chain(tmp_path: Path) -> None:
    """A child names a derived entry: it inherits through it, counts both levels' packages,
    and is built FROM the parent's image (listed after it, whatever the file's order)."""
    catalog = tmp_path / "catalog.yaml"
    entries = [
        {"id": "child", "base": "ds", "pip": ["zipp==3.20.0"]},
        {"id": "ds", "base": "tf213", "pip": ["six==1.16.0", "tomli==2.0.1"]},
        BASE,
    ]
    catalog.write_text(yaml.safe_dump({"environments": entries}))
    cat = TFEnvCatalog(catalog_files=[str(catalog)])
    assert cat.problems() == []
    ds, child = cat.get("ds"), cat.get("child")
    assert child.derived is not None and child.derived.parent == "ds"
    assert child.derived.base_image == ds.image
    assert child.display_name == "TensorFlow 2.13.0 (1 GPU) + 3 packages"
    assert (child.gpus, child.memory) == (1, 8 * 1024**3)
    # The parent's recorded resolution names its image, and so the child's base.
    lock = LockFile(tmp_path / "tfenv-lock.json", missing=True)
    assert ds.derived is not None
    lock.resolved["ds"] = _resolved(ds)
    lock.save()
    cat.refresh()
    assert cat.get("ds").image.rpartition(":")[2].startswith("v2-")
    assert cat.get("child").derived.base_image == cat.get("ds").image  # type: ignore[union-attr]


def test_a_cycle_of_bases_is_refused_naming_its_entries(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    entries = [
        BASE,
        {"id": "a", "base": "b", "pip": ["six==1.16.0"]},
        {"id": "b", "base": "c", "pip": ["six==1.16.0"]},
        {"id": "c", "base": "a", "pip": ["six==1.16.0"]},
        {"id": "self", "base": "self", "pip": ["six==1.16.0"]},
        {"id": "fine", "base": "tf213", "pip": ["six==1.16.0"]},
    ]
    catalog.write_text(yaml.safe_dump({"environments": entries}))
    cat = TFEnvCatalog(catalog_files=[str(catalog)])
    assert sorted(env.id for env in cat.all()) == ["fine", "tf213"]
    problems = {p.entry: p for p in cat.problems()}
    assert sorted(problems) == ["'a'", "'b'", "'c'", "'self'"]
    assert problems["'a'"].field == "base"
    assert "'a' → 'b' → 'c' → 'a'" in problems["'a'"].message
    assert "cycle" in problems["'self'"].message and "'self' → 'self'" in problems["'self'"].message


def test_order_entries_puts_bases_first() -> None:
    entries = [
        (1, {"id": "c", "base": "b"}),
        (2, {"id": "b", "base": "a"}),
        (3, {"id": "a", "base": "img:1.0"}),
        (4, {"id": "img", "image": "x:1.0"}),
    ]
    ordered, cycles = order_entries(entries)
    assert [key for key, _ in ordered] == [4, 3, 2, 1] and cycles == {}


def test_hashes_are_kept_sorted() -> None:
    other = "sha256:" + "b" * 64
    pin = parse_pin(f"Six==1.16.0 --hash={other} --hash={SHA}")
    assert pin.hashes == (SHA, other)
    assert pin.line() == f"six==1.16.0 --hash={SHA} --hash={other}"


def test_catalog_file_with_a_pip_file_and_a_problem(tmp_path: Path) -> None:
    (tmp_path / "ds.txt").write_text(
        "# pinned by pip-compile\nsix==1.16.0 \\\n    --hash=" + SHA + "\n\ntomli==2.0.1  # toml\n"
    )
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        yaml.safe_dump(
            {
                "environments": [
                    {"id": "ds", "base": "tf213", "pip_file": "ds.txt"},
                    BASE,
                    {"id": "loose", "base": "tf213", "pip": ["pandas"]},
                ]
            }
        )
    )
    cat = TFEnvCatalog(catalog_files=[str(catalog)])
    ds = cat.get("ds")
    assert ds.derived is not None
    assert [p.line() for p in ds.derived.pins] == [f"six==1.16.0 --hash={SHA}", "tomli==2.0.1"]
    [problem] = cat.problems()
    assert (problem.entry, problem.field) == ("'loose'", "pip")
    assert "Pin it exactly" in problem.message


def test_image_or_base_is_required() -> None:
    with pytest.raises(CatalogError, match="'image' is a required property"):
        environment_from_dict({"id": "x"})


def test_an_edited_pip_file_reloads_the_entry(tmp_path: Path) -> None:
    reqs = tmp_path / "ds.txt"
    reqs.write_text("six==1.16.0\n")
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        yaml.safe_dump(
            {"environments": [BASE, {"id": "ds", "base": "tf213", "pip_file": "ds.txt"}]}
        )
    )
    cat = TFEnvCatalog(catalog_files=[str(catalog)])
    first = cat.get("ds").image
    reqs.write_text("six==1.16.0\ntomli==2.0.1\n")
    again = cat.get("ds")
    assert again.image != first
    assert again.derived is not None and len(again.derived.pins) == 2


def test_strict_lock_accepts_a_recorded_build_and_names_the_build_command(tmp_path: Path) -> None:
    env = _derive(pip=["six==1.16.0"])
    lock = LockFile(tmp_path / "tfenv-lock.json", missing=True)
    with pytest.raises(LockMissingError) as err:
        require_lock(env, lock)
    assert "`jupyter tfenv build ds`" in str(err.value)
    lock.builds[env.image] = {"inputs": "x", "image_id": "sha256:" + "0" * 64}
    require_lock(env, lock)
    lock.resolved["ds"] = {"inputs": "x"}
    lock.save()
    again = LockFile.load(lock.path)
    assert again.builds == lock.builds and again.resolved == lock.resolved


def test_package_changes_against_the_base() -> None:
    base = {"numpy": "1.26.4", "six": "1.15.0", "wheel": "0.42.0"}
    image = {"numpy": "1.26.4", "six": "1.16.0", "tomli": "2.0.1"}
    assert package_changes(base, image) == {
        "added": {"tomli": "2.0.1"},
        "changed": {"six": ["1.15.0", "1.16.0"]},
        "removed": ["wheel"],
    }
    assert package_changes(None, image) is None
