"""``/tfenv/choices``: the resources a notebook's next kernel start chose (docs/choices.md).

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


def _body(raw: bytes) -> tuple[str, str, dict[str, Any]]:
    try:
        body = json.loads(raw or b"{}")
    except ValueError as err:
        raise web.HTTPError(400, f"the body is not JSON: {err}") from err
    if not isinstance(body, dict):
        raise web.HTTPError(400, "the body must be an object {path, environment, choices}")
    path, env_id, values = body.get("path"), body.get("environment"), body.get("choices", {})
    if not isinstance(path, str) or not path.endswith(".ipynb"):
        raise web.HTTPError(400, "path: the notebook's path (…/name.ipynb) is required")
    if not isinstance(env_id, str) or not env_id:
        raise web.HTTPError(400, "environment: a catalog environment id is required")
    if not isinstance(values, dict):
        raise web.HTTPError(400, "choices: an object of resource to value, e.g. {memory: 16g}")
    return path, env_id, values


def _notebook_path(path: str, root_dir: str) -> str:
    """The notebook's file as ``$JPY_SESSION_NAME`` names it (below the server's root)."""
    root = os.path.abspath(root_dir)
    notebook = os.path.normpath(to_os_path(ApiPath(path.strip("/")), root))
    if os.path.commonpath([notebook, root]) != root:
        raise web.HTTPError(400, "path: a notebook below the server's root folder")
    return notebook


class ChoicesHandler(TFEnvHandler):
    @web.authenticated
    @authorized(action="execute")
    async def post(self) -> None:
        """Check a notebook's choice and keep it for its next kernel start."""
        path, env_id, values = _body(self.request.body)
        chosen = apply_choices(self.tfenv.catalog.get(env_id), values)  # 404, 400
        notebook = _notebook_path(path, self.settings["server_root_dir"])
        choices.remember(notebook, chosen.id, chosen.chosen)
        self.write_json({"path": path, "environment": chosen.id, "choices": chosen.chosen})


routes = [(r"/tfenv/choices", ChoicesHandler)]
