"""JupyterHub scopes for the ``/tfenv`` REST API: :class:`TFEnvHubAuthorizer`.

Inside JupyterHub every user who may access a single-user server may do everything on
it. With this authorizer, the tfenv endpoints (resource ``tfenv``, see
``jupyter_tfenv/server/handlers/base.py``) additionally need a custom JupyterHub scope per action:

================================  =========================================================
``custom:tfenv:read``             GET: environments, image status, cached probes, kernels'
                                  live status, GPUs, checkpoints
``custom:tfenv:write``            pulls, deleting checkpoints
``custom:tfenv:execute``          probing an image now (starts a throwaway container)
================================  =========================================================

The scope is checked for **this** server: a user (or admin, or service) holds it
unfiltered, or filtered to the server's owner or the server (``!user=alice``,
``!server=alice/``, ``!server=alice/gpu``), or to a group the owner belongs to
(``!group=…``, when the requester is the server's owner: the single-user server cannot
look up another user's groups). Every other resource
(contents, kernels, terminals, …) is decided by JupyterHub's own authorizer.

In ``jupyterhub_config.py``::

    c.JupyterHub.custom_scopes = {
        "custom:tfenv:read": {"description": "See tfenv environments, images, GPUs and kernels"},
        "custom:tfenv:write": {"description": "Pull tfenv images, delete checkpoints"},
        "custom:tfenv:execute": {"description": "Probe tfenv images (runs a container)"},
    }
    c.JupyterHub.load_roles = [
        {
            "name": "user",  # every user, on their own servers
            "scopes": [
                "self",
                "custom:tfenv:read!user",
                "custom:tfenv:execute!user",
            ],
        },
    ]
    # Browser tokens of a single-user server carry only the scopes its OAuth client may
    # hand out (intersected with what the user holds):
    c.Spawner.oauth_client_allowed_scopes = [
        "custom:tfenv:read",
        "custom:tfenv:write",
        "custom:tfenv:execute",
    ]
    c.Spawner.args = ["--ServerApp.authorizer_class=jupyter_tfenv.server.hub.TFEnvHubAuthorizer"]

(``!user`` in a role means "the role holder's own"; JupyterHub expands it.) JupyterHub's
single-user extension sets the identity provider but no authorizer (checked with
jupyterhub 6.1.1: without this option the server's authorizer is jupyter_server's
AllowAllAuthorizer), so ``--ServerApp.authorizer_class=…`` on the singleuser command line
(``c.Spawner.args``), or ``c.ServerApp.authorizer_class =
"jupyter_tfenv.server.hub.TFEnvHubAuthorizer"`` in the server's config, takes effect; both were
checked with ``jupyterhub-singleuser``.

jupyterhub is an optional dependency: importing this module without it fails with a clear
message, and nothing else of jupyter_tfenv imports it.
"""

from __future__ import annotations

import os
from typing import Any

try:
    from jupyterhub.singleuser.extension import JupyterHubAuthorizer
except ImportError as _err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "jupyter_tfenv.server.hub.TFEnvHubAuthorizer needs jupyterhub in the single-user "
        "server's environment (`pip install jupyterhub`)."
    ) from _err

from jupyter_tfenv.server.handlers.base import AUTH_RESOURCE

#: The custom JupyterHub scope of each tfenv action.
SCOPE_PREFIX = "custom:tfenv:"
ACTIONS = ("read", "write", "execute")
TFENV_SCOPES = tuple(SCOPE_PREFIX + action for action in ACTIONS)


def server_filter() -> str:
    """``!server=<owner>/<server name>`` of this single-user server (from JupyterHub's
    environment variables)."""
    owner = os.environ.get("JUPYTERHUB_USER", "")
    name = os.environ.get("JUPYTERHUB_SERVER_NAME", "")
    return f"!server={owner}/{name}"


def required_scopes(action: str) -> set[str]:
    """The scope, filtered to this server, that grants ``action`` on its tfenv API."""
    return {SCOPE_PREFIX + action + server_filter()}


def group_grants(action: str, hub_user: dict[str, Any]) -> set[str]:
    """``custom:tfenv:<action>!group=<g>`` scopes of ``hub_user`` that cover this server.

    Without the Hub's database JupyterHub's scope check cannot match a group filter to a
    server; the requester's groups are the owner's when the requester is the owner.
    """
    owner = os.environ.get("JUPYTERHUB_USER", "")
    if not owner or hub_user.get("kind", "user") != "user" or hub_user.get("name") != owner:
        return set()
    wanted = {f"{SCOPE_PREFIX}{action}!group={group}" for group in hub_user.get("groups") or []}
    return wanted & set(hub_user.get("scopes") or [])


class TFEnvHubAuthorizer(JupyterHubAuthorizer):
    """JupyterHub's authorizer, plus ``custom:tfenv:<action>`` for the tfenv API."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        allowed = bool(super().is_authorized(handler, user, action, resource))
        if resource != AUTH_RESOURCE or not allowed:
            return allowed
        hub_user = getattr(user, "hub_user", None)
        if not isinstance(hub_user, dict) or action not in ACTIONS:
            return False
        needed = required_scopes(action)
        # Group filters are matched by group_grants (JupyterHub's check cannot, and warns).
        scopes = [s for s in hub_user.get("scopes") or [] if "!group=" not in s]
        have = self.hub_auth.check_scopes(needed, {**hub_user, "scopes": scopes})
        have = have or group_grants(action, hub_user)
        if not have:
            self.log.warning(
                "tfenv: %s may not %s tfenv here: needs one of %s",
                hub_user.get("name", "?"),
                action,
                ", ".join(sorted(needed)),
            )
        return bool(have)
