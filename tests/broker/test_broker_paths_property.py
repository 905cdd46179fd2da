"""Property-based tests (hypothesis) of the broker's names and folder checks: whatever
user name, kernel id or path a caller sends, the folders the broker derives or accepts
stay inside their roots, and different names never share a folder.

The folder check runs against a real tree (folders of the caller's uid, another uid's,
root's 0700 folder, symlinks out of the root and within it): these tests run as root.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_tfenv.broker import policy
from jupyter_tfenv.broker.policy import BrokerError
from jupyter_tfenv.checkpoints.layout import (
    CheckpointStorageError,
    StorageConfig,
    escape_path_component,
    locate,
    unescape_path_component,
)
from jupyter_tfenv.core.caller import Caller

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown to other uids)")

UID, GID, OTHER = 1001, 1001, 1002

kernel_ids = st.from_regex(policy.KERNEL_ID_RE, fullmatch=True)
#: Names as a hub could send them: anything, with path characters favoured.
names = st.text(alphabet=st.one_of(st.sampled_from("./%_-{}\\ \x00~"), st.characters()), min_size=1)


# -- names: injective, one path component, inside the root -------------------------------


@given(kernel_ids, kernel_ids)
def test_runtime_names_are_one_component_and_injective(a: str, b: str) -> None:
    name = policy.runtime_name(a)
    assert "/" not in name and name not in (".", "..")
    assert len(name) <= policy.RUNTIME_NAME_MAX
    path = policy.runtime_dir_for("/run/tfenv-broker", UID, a)
    assert os.path.dirname(path) == f"/run/tfenv-broker/{UID}"
    assert os.path.normpath(path) == path
    if a != b:
        assert policy.runtime_name(a) != policy.runtime_name(b)


@given(st.text(min_size=1, max_size=120))
def test_anything_but_a_kernel_id_names_no_runtime_folder(text: str) -> None:
    if policy.KERNEL_ID_RE.match(text):
        return
    with pytest.raises(BrokerError):
        policy.runtime_name(text)


@given(names, names)
def test_escaped_names_are_one_component_and_injective(a: str, b: str) -> None:
    try:
        ea = escape_path_component(a)
    except CheckpointStorageError:
        return  # too long for a folder name: refused, never cut
    assert ea and "/" not in ea and "\0" not in ea and ea not in (".", "..")
    if not any("\ud800" <= c <= "\udfff" for c in a):
        # (A lone surrogate, which JSON can carry, escapes to a folder of its own but is
        # not recognised when the folder is listed: unescape_path_component says None.)
        assert unescape_path_component(ea) == a
    try:
        eb = escape_path_component(b)
    except CheckpointStorageError:
        return
    assert (ea == eb) == (a == b)


@given(names, names)
def test_checkpoint_folders_stay_below_their_root(user: str, env: str) -> None:
    config = StorageConfig(checkpoint_root="/srv/tfenv/checkpoints", log_root="/srv/tfenv/logs")
    for kind, root in (("checkpoints", "/srv/tfenv/checkpoints"), ("logs", "/srv/tfenv/logs")):
        try:
            loc = locate(config, kind, user, env)
        except CheckpointStorageError:
            continue
        assert loc.host_path is not None
        assert os.path.normpath(loc.host_path) == loc.host_path
        assert os.path.dirname(os.path.dirname(loc.host_path)) == root


@given(names, st.sampled_from(["{home}", "/data/{username}", "/data/{username}/work", "/x/"]))
def test_rendered_roots_never_leave_their_template(name: str, template: str) -> None:
    caller = Caller(name=name, uid=UID, gid=GID, home="/home/alice")
    for root in policy.render_roots([template], caller):
        assert root != "/"
        assert os.path.isabs(root) and os.path.normpath(root) == root
        fixed = template.split("{", 1)[0].rstrip("/") or "/"
        assert policy.inside(root, fixed if template != "{home}" else "/home/alice")
        if "{username}" in template:
            assert root.split("/")[2] == name  # the name is exactly one component


# -- check_folder never accepts a path outside the roots -----------------------------------


class Tree:
    """root/
    home/alice (uid 1001)/ a/ a/b/  shared (uid 1002)/  locked (root, 0700)/inner/
                          in-link -> a   out-link -> ../../elsewhere
    home/alice2 (uid 1001)/   (a string prefix of alice, not inside it)
    elsewhere (uid 1001)/ x/
    """

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="tfprop-", dir="/tmp")).resolve()
        os.chmod(self.base, 0o755)
        self.home = self.base / "home" / "alice"
        for rel in ("home/alice/a/b", "home/alice/shared", "home/alice/locked/inner",
                    "home/alice2", "elsewhere/x"):  # fmt: skip
            (self.base / rel).mkdir(parents=True, exist_ok=True)
        for rel in ("home/alice", "home/alice/a", "home/alice/a/b", "home/alice2", "elsewhere",
                    "elsewhere/x"):  # fmt: skip
            os.chown(self.base / rel, UID, GID)
        os.chown(self.home / "shared", OTHER, OTHER)
        os.chmod(self.home / "locked", 0o700)
        (self.home / "in-link").symlink_to("a")
        (self.home / "out-link").symlink_to("../../elsewhere")
        self.caller = Caller("alice", UID, GID, str(self.home), frozenset())
        self.roots = policy.render_roots(["{home}"], self.caller)

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def tree() -> Iterator[Tree]:
    made = Tree()
    yield made
    made.remove()


components = st.sampled_from(
    [
        "a",
        "b",
        "x",
        "..",
        ".",
        "",
        "in-link",
        "out-link",
        "shared",
        "locked",
        "inner",
        "alice",
        "alice2",
        "home",
        "elsewhere",
        "missing",
        "b/",
        "//",
    ]
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(["home", "home/alice", "", "elsewhere", "home/alice2"]),
    st.lists(components, max_size=6),
)
def test_check_folder_never_accepts_a_path_outside_the_roots(
    tree: Tree, start: str, parts: list[str]
) -> None:
    path = "/".join([str(tree.base), *([start] if start else []), *parts])
    seen: dict[str, object] = {}
    try:
        accepted = policy.check_folder(path, tree.caller, tree.roots, "mount", seen)  # type: ignore[arg-type]
    except BrokerError as err:
        assert err.http_status in (400, 403)
        # The answer names the path as sent, never where a symlink leads (out-link).
        if "elsewhere" not in path:
            assert "elsewhere" not in err.message, err.message
        return
    real = os.path.realpath(accepted)
    assert real == accepted  # no symlink, no '..' in what is accepted
    assert any(policy.inside(accepted, root) for root in tree.roots)
    assert os.lstat(accepted).st_uid == UID
    assert not policy.inside(accepted, str(tree.home / "locked"))
