"""TFEnvHubAuthorizer: custom:tfenv:<action> scopes, with JupyterHub's filters (no hub)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("jupyterhub")

from jupyter_server.auth import IdentityProvider
from jupyterhub.services.auth import HubAuth
from jupyterhub.singleuser.extension import JupyterHubUser
from traitlets import Instance

from jupyter_tfenv.server.hub import TFEnvHubAuthorizer, group_grants, required_scopes

ACCESS = {"access:servers!server=alice/", "access:servers!user=alice"}


class FakeIdentityProvider(IdentityProvider):
    hub_auth = Instance(HubAuth)


@pytest.fixture
def authorizer(monkeypatch: pytest.MonkeyPatch) -> TFEnvHubAuthorizer:
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    monkeypatch.setenv("JUPYTERHUB_SERVER_NAME", "")
    hub_auth = HubAuth(api_token="unused", access_scopes=ACCESS)
    return TFEnvHubAuthorizer(identity_provider=FakeIdentityProvider(hub_auth=hub_auth))


def user(scopes: list[str], name: str = "alice", groups: list[str] | None = None) -> Any:
    return JupyterHubUser({"name": name, "kind": "user", "groups": groups or [], "scopes": scopes})


ACCESS_ALICE = "access:servers!server=alice/"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(
    ("scopes", "action", "allowed"),
    [
        ([ACCESS_ALICE], "read", False),
        ([ACCESS_ALICE, "custom:tfenv:read"], "read", True),
        ([ACCESS_ALICE, "custom:tfenv:read"], "write", False),
        ([ACCESS_ALICE, "custom:tfenv:read"], "execute", False),
        ([ACCESS_ALICE, "custom:tfenv:read!user=alice"], "read", True),
        ([ACCESS_ALICE, "custom:tfenv:read!user=bob"], "read", False),
        ([ACCESS_ALICE, "custom:tfenv:write!server=alice/"], "write", True),
        ([ACCESS_ALICE, "custom:tfenv:write!server=alice/other"], "write", False),
        ([ACCESS_ALICE, "custom:tfenv:execute!group=gpu"], "execute", True),
        ([ACCESS_ALICE, "custom:tfenv:execute!group=cpu"], "execute", False),
        # no access to the server at all: the parent's answer stands
        (["custom:tfenv:read"], "read", False),
    ],
)
def test_tfenv_actions_need_their_custom_scope(authorizer, scopes, action, allowed):
    assert authorizer.is_authorized(None, user(scopes, groups=["gpu"]), action, "tfenv") is allowed


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_other_resources_are_the_parents_decision(authorizer):
    plain = user([ACCESS_ALICE])
    assert authorizer.is_authorized(None, plain, "execute", "kernels")
    assert authorizer.is_authorized(None, plain, "write", "contents")
    assert not authorizer.is_authorized(None, user(["read:users"]), "read", "contents")


def test_group_filters_only_for_the_servers_owner(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    monkeypatch.setenv("JUPYTERHUB_SERVER_NAME", "gpu")
    assert required_scopes("read") == {"custom:tfenv:read!server=alice/gpu"}
    scopes = ["custom:tfenv:read!group=g", "custom:tfenv:write!group=h"]
    assert group_grants("read", {"name": "alice", "groups": ["g", "h"], "scopes": scopes}) == {
        "custom:tfenv:read!group=g"
    }
    assert not group_grants("read", {"name": "bob", "groups": ["g"], "scopes": scopes})
    assert not group_grants("read", {"name": "alice", "groups": ["x"], "scopes": scopes})
