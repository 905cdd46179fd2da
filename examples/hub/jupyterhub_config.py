# jupyter_tfenv on JupyterHub: a single-host team GPU server.
#
#   jupyterhub -f /etc/jupyterhub/jupyterhub_config.py       (as root)
#
# Users log in with their Unix accounts (PAM); each user's single-user server runs as
# that user (LocalProcessSpawner). Their TensorFlow kernels run in hardened containers
# that the **tfenv broker** starts for them: a JupyterHub service (root) that alone holds
# the Docker socket, runs every kernel as the caller's own uid:gid with no capabilities
# and no network, and enforces the catalog, group restrictions and quotas. Users are
# never in the `docker` group. See docs/jupyterhub.md for the whole setup, and
# docs/broker.md for the broker's policy and API.
#
# This file is what tests/hub/ runs: the end-to-end tests load it and override only
# ports, state paths and the values read from the environment below.
#
# Prerequisites (docs/jupyterhub.md, "Install"):
#   * jupyterhub, configurable-http-proxy and jupyter_tfenv installed in one Python that
#     every user can run (e.g. /opt/jupyterhub, a venv readable by all);
#   * Docker running; the catalog's images pulled by an admin (`jupyter tfenv pull`);
#   * /srv/tfenv/checkpoints owned by root, mode 0755 (the broker makes one 0700 folder
#     per user below it);
#   * a Unix group `tfenv-gpu` for the users who may use the GPU environments.

import os
import sys
from pathlib import Path

c = get_config()  # type: ignore[name-defined]  # noqa: F821 - provided by JupyterHub


def setting(name: str, default: str) -> str:
    """A value admins usually edit here, that the environment may override."""
    return os.environ.get(name) or default


HERE = Path(__file__).resolve().parent  # __file__: this config file (traitlets sets it)
BROKER_NAME = "tfenv-broker"

# ------------------------------------------------------------------------ the knobs
# The team catalog: which TensorFlow environments exist (schema:
# schema/catalog.schema.json; example: examples/hub/tfenv-catalog.yaml). Readable by
# everyone: the broker decides from it, and users' servers show it in the kernel picker.
CATALOG = setting("JUPYTER_TFENV_CATALOG", "/etc/jupyterhub/tfenv-catalog.yaml")
# Where the broker listens: loopback only. Users' servers reach it there; the hub checks
# every token it receives.
BROKER_PORT = int(setting("TFENV_BROKER_PORT", "8765"))
BROKER_URL = f"http://127.0.0.1:{BROKER_PORT}"
# Checkpoint folders: <root>/<user>/<environment>, mounted at /tfenv/checkpoints;
# TensorBoard log folders likewise, mounted at /tfenv/logs.
CHECKPOINT_ROOT = setting("TFENV_CHECKPOINT_ROOT", "/srv/tfenv/checkpoints")
LOG_ROOT = setting("TFENV_LOG_ROOT", "/srv/tfenv/logs")
# The kernels' runtime folders (connection file, ZeroMQ sockets): short path, root's.
RUNTIME_ROOT = setting("TFENV_RUNTIME_ROOT", "/run/tfenv-broker")
# Per-user quotas: running kernels, and GPUs held by running kernels.
MAX_KERNELS_PER_USER = int(setting("TFENV_MAX_KERNELS_PER_USER", "2"))
MAX_GPUS_PER_USER = int(setting("TFENV_MAX_GPUS_PER_USER", "1"))
# The broker's own settings (group restrictions, mount roots, environment variables):
# a traitlets config file next to this one.
BROKER_CONFIG = setting("TFENV_BROKER_CONFIG", str(HERE / "tfenv_broker_config.py"))
# How often (seconds) each user's server looks for idle kernels; an environment's
# `idle_timeout` (catalog, seconds) says when its kernels count as idle.
CULL_INTERVAL = int(setting("TFENV_CULL_INTERVAL", "60"))
# Who may log in: members of this Unix group.
USERS_GROUP = setting("TFENV_USERS_GROUP", "jupyterhub-users")

# ------------------------------------------------------------------------ the hub
c.JupyterHub.bind_url = "http://:8000"  # put TLS (a reverse proxy, or ssl_cert) in front
c.JupyterHub.db_url = "sqlite:////var/lib/jupyterhub/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "/var/lib/jupyterhub/jupyterhub_cookie_secret"  # noqa: S105
# Stop the users' servers (and so their kernels) when the hub stops.
c.JupyterHub.cleanup_servers = True

# ------------------------------------------------------------------------ who logs in
# System users, with their Unix passwords. No accounts are created: the Unix account is
# what the broker runs a user's kernels as.
c.JupyterHub.authenticator_class = "pam"
c.PAMAuthenticator.allowed_groups = {USERS_GROUP}
c.Authenticator.admin_users = set()  # e.g. {"alice"}: admins see the hub's admin page

# ------------------------------------------------------------------------ the servers
# Each user's server runs as that user, in their home, with this Python's
# jupyterhub-singleuser (the same install as the hub, so jupyter_tfenv is there too).
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [os.path.join(os.path.dirname(sys.executable), "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.environment = {
    # The server starts kernels through the broker, with its own hub token
    # ($JUPYTERHUB_API_TOKEN, which carries access:services!service=tfenv-broker below).
    "JUPYTER_TFENV_BROKER_URL": BROKER_URL,
    # The same catalog as the broker's: the kernel picker shows what the broker allows.
    "JUPYTER_TFENV_CATALOG": CATALOG,
    # Where the panel's Checkpoints section finds the user's folders (read as the user).
    "JUPYTER_TFENV_CHECKPOINT_ROOT": CHECKPOINT_ROOT,
    "JUPYTER_TFENV_LOG_ROOT": LOG_ROOT,
}
c.Spawner.args = [
    # tfenv's REST API (/user/<name>/tfenv/...) checks the custom:tfenv:* scopes below.
    "--ServerApp.authorizer_class=jupyter_tfenv.server.hub.TFEnvHubAuthorizer",
    # Idle kernels (catalog field idle_timeout) are shut down; this is how often to look.
    f"--TFEnvApp.cull_interval={CULL_INTERVAL}",
    # GPU environments whose catalog entry sets no idle_timeout: shut down after 1 h idle.
    "--TFEnvApp.gpu_idle_timeout=3600",
    # A notebook tab left open keeps its kernel (set True to cull those too).
    "--TFEnvApp.cull_connected=False",
]
# Tokens JupyterLab gets in the browser (OAuth) carry only scopes the server's OAuth
# client may hand out: add tfenv's (each still limited to what the user holds).
c.Spawner.oauth_client_allowed_scopes = [
    "custom:tfenv:read",
    "custom:tfenv:write",
    "custom:tfenv:execute",
]
# The server's own token may call the broker (in addition to the defaults).
c.Spawner.server_token_scopes = [
    "users:activity!user",
    "access:servers!server",
    f"access:services!service={BROKER_NAME}",
]

# ------------------------------------------------------------------------ the broker
# A hub-managed service: JupyterHub starts it (as root, like the hub), gives it
# JUPYTERHUB_API_TOKEN/JUPYTERHUB_SERVICE_URL, and starts it again when it exits. It
# keeps no state of its own (kernels are found again from container labels), so a
# restart leaves running kernels running and controllable.
c.JupyterHub.services = [
    {
        "name": BROKER_NAME,
        "url": BROKER_URL,
        "command": [
            sys.executable,
            "-m",
            "jupyter_tfenv.broker",
            f"--config={BROKER_CONFIG}",
            f"--TFEnvBroker.runtime_root={RUNTIME_ROOT}",
            f"--TFEnvBroker.checkpoint_root={CHECKPOINT_ROOT}",
            f"--TFEnvBroker.log_root={LOG_ROOT}",
            f"--TFEnvBroker.max_kernels_per_user={MAX_KERNELS_PER_USER}",
            f"--TFEnvBroker.max_gpus_per_user={MAX_GPUS_PER_USER}",
        ],
        "environment": {"JUPYTER_TFENV_CATALOG": CATALOG},
        # Users' servers talk to it with tokens; nobody logs in to it in a browser.
        "oauth_no_confirm": True,
        "display": False,
    }
]

# ------------------------------------------------------------------------ permissions
# tfenv's REST API in each user's server (/user/<name>/tfenv/...) asks for these scopes:
# reading (environments, kernels, GPUs, checkpoints), writing (deleting checkpoints;
# pulls are refused anyway: admins pull) and execute (probing an image now, which starts
# a throwaway container). Grant them per user (`!user`), or to groups and services.
# Kernels, files and terminals stay under JupyterHub's access:servers.
c.JupyterHub.custom_scopes = {
    "custom:tfenv:read": {
        "description": "See tfenv environments, kernels, GPUs and checkpoints on a server.",
    },
    "custom:tfenv:write": {
        "description": "Change tfenv state on a server: delete checkpoints.",
    },
    "custom:tfenv:execute": {
        "description": "Probe a tfenv image now from a server (runs a container).",
    },
}
c.JupyterHub.load_roles = [
    {
        # Every user: their own server and tfenv on it, and the broker (for their
        # server's requests and their own tokens).
        "name": "user",
        "scopes": [
            "self",
            f"access:services!service={BROKER_NAME}",
            "custom:tfenv:read!user",
            "custom:tfenv:write!user",
            "custom:tfenv:execute!user",
        ],
    },
]
