"""``/tfenv/choices``: the resources a notebook's (or a console's) next kernel start chose
(docs/choices.md).

JupyterLab's session request names only the kernelspec; its dialog sends the choice here
first. It is checked against the catalog entry now (400 with the allowed values) and kept
for the provisioner (provisioning/choices.py), which checks it again when it applies it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import ApiPath, to_os_path
from tornado import web

from jupyter_tfenv.catalog.choices import apply_choices
from jupyter_tfenv.provisioning import choices
from jupyter_tfenv.server.handlers.base import TFEnvHandler


def _body(raw: bytes) -> tuple[str, str | None, str, dict[str, Any]]:
    try:
        body = json.loads(raw or b"{}")
    except ValueError as err:
        raise web.HTTPError(400, f"the body is not JSON: {err}") from err
    if not isinstance(body, dict):
        raise web.HTTPError(400, "the body must be an object {path, environment, choices}")
    path, env_id, values = body.get("path"), body.get("environment"), body.get("choices", {})
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip() or "/" in name):
        raise web.HTTPError(400, "name: the console session's name (e.g. 'Console 1'), no '/'")
    if not isinstance(path, str) or (name is None and not path.endswith(".ipynb")):
        raise web.HTTPError(
            400, "path: the notebook's path (…/name.ipynb), or a console session's path and name"
        )
    if not isinstance(env_id, str) or not env_id:
        raise web.HTTPError(400, "environment: a catalog environment id is required")
    if not isinstance(values, dict):
        raise web.HTTPError(400, "choices: an object of resource to value, e.g. {memory: 16g}")
    return path, name, env_id, values


def _notebook_path(path: str, root_dir: str) -> str:
    """The notebook's file as ``$JPY_SESSION_NAME`` names it (below the server's root)."""
    root = os.path.abspath(root_dir)
    notebook = os.path.normpath(to_os_path(ApiPath(path.strip("/")), root))
    if os.path.commonpath([notebook, root]) != root:
        raise web.HTTPError(400, "path: a notebook below the server's root folder")
    return notebook


def _console_session(path: str, name: str, root_dir: str, kernel_manager: Any) -> str:
    """A console's ``$JPY_SESSION_NAME``: jupyter_server names ``name`` in the folder of
    the session's ``path`` (it has no file)."""
    root = os.path.abspath(root_dir)
    _notebook_path(path, root)  # below the root
    session = os.path.normpath(os.path.join(kernel_manager.cwd_for_path(path.strip("/")), name))
    if os.path.commonpath([session, root]) != root:
        raise web.HTTPError(400, "path: a console session below the server's root folder")
    return session


class ChoicesHandler(TFEnvHandler):
    @web.authenticated
    @authorized(action="execute")
    async def post(self) -> None:
        """Check a notebook's (or a console's) choice and keep it for its next kernel
        start."""
        path, name, env_id, values = _body(self.request.body)
        chosen = apply_choices(self.tfenv.catalog.get(env_id), values)  # 404, 400
        root = self.settings["server_root_dir"]
        if name is None:
            session = _notebook_path(path, root)
        else:
            session = _console_session(path, name, root, self.kernel_manager)
        choices.remember(session, chosen.id, chosen.chosen)
        self.write_json({"path": path, "environment": chosen.id, "choices": chosen.chosen})


routes = [(r"/tfenv/choices", ChoicesHandler)]
