"""The provisioner's own settings (``c.DockerKernelProvisioner.*``, or
``c.TFEnvKernelProvisioner.*``): who the kernel runs as, its transport, runtime root,
passed variables, mounts, storage roots, and the broker it goes through on a hub.

A mixin of :class:`~jupyter_tfenv.provisioning.provisioner.TFEnvKernelProvisioner` (beside the
shared ``backends.settings`` mixins), so the traits keep their config section.
"""

from __future__ import annotations

import os

from traitlets import Bool, Enum, HasTraits, Integer, List, Unicode, default

from jupyter_tfenv.backends.broker import BROKER_TOKEN_VAR, BROKER_URL_VAR
from jupyter_tfenv.backends.docker.engine import default_owner
from jupyter_tfenv.kernels.connection import default_runtime_root


def _env_int(name: str, fallback: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip().isdigit() else fallback


class ProvisionerSettings(HasTraits):
    """What a kernel of this server runs as and how it is reached."""

    uid = Integer(
        help="""uid the kernel runs as inside its container. Defaults to the server's own
        uid ($JUPYTER_TFENV_KERNEL_UID overrides). uid 0 is refused unless allow_root.""",
    ).tag(config=True)

    gid = Integer(
        help="gid of the kernel (default: the server's gid, or $JUPYTER_TFENV_KERNEL_GID).",
    ).tag(config=True)

    @default("uid")
    def _default_uid(self) -> int:
        return _env_int("JUPYTER_TFENV_KERNEL_UID", os.getuid())

    @default("gid")
    def _default_gid(self) -> int:
        return _env_int("JUPYTER_TFENV_KERNEL_GID", os.getgid())

    probe_cache_dir = Unicode(
        "",
        help="""Where cached environment probes are read from when a kernel starts (the GPU
        compatibility check). Empty: TFEnvApp.probe_cache_dir when the server sets it, else
        the Jupyter data dir's jupyter_tfenv/probes.""",
    ).tag(config=True)

    allow_root = Bool(
        False, help="Allow kernels to run as uid 0 in their containers (not recommended)."
    ).tag(config=True)

    owner = Unicode(help="Owner label of kernel containers (default: the notebook user).").tag(
        config=True
    )

    @default("owner")
    def _default_owner(self) -> str:
        return default_owner()

    transport = Enum(
        ["ipc", "tcp"],
        default_value="ipc",
        help="""'ipc' (default): ZeroMQ over Unix sockets in the kernel's runtime folder, on
        no network. 'tcp': 127.0.0.1 in the host's network namespace, for engines where Unix
        sockets cannot cross into the container (Docker Desktop).""",
    ).tag(config=True)

    runtime_root = Unicode(
        help="""Folder for per-kernel runtime folders (IPC sockets, connection file). Keep
        its path short: Unix socket paths are limited to 107 bytes. It must be a real
        folder (no symlink) of the server's own uid that no other user can write to;
        otherwise kernels are refused. Default: $XDG_RUNTIME_DIR/tfenv when
        $XDG_RUNTIME_DIR is a private folder of the server's uid, else /tmp/tfenv-<uid>.""",
    ).tag(config=True)

    @default("runtime_root")
    def _default_runtime_root(self) -> str:
        return default_runtime_root()

    env_allowlist = List(
        Unicode(),
        default_value=["LANG", "LC_ALL", "LC_CTYPE", "TZ"],
        help="""Server environment variables passed to kernels. Nothing else from the
        server's environment reaches a container (no tokens, no JUPYTERHUB_*).""",
    ).tag(config=True)

    home = Unicode("/tmp", help="HOME inside kernel containers.").tag(config=True)  # noqa: S108

    mount_root = Enum(
        ["root_dir", "cwd"],
        default_value="root_dir",
        help="""Which host folder is mounted (at the same path) read-write: the server's
        root_dir (default, so '../data' in a notebook behaves as locally) or only the
        notebook's own folder. The working directory is always the notebook's folder.""",
    ).tag(config=True)

    read_only_rootfs = Bool(
        False, help="Mount the image's root filesystem read-only (pip installs then fail)."
    ).tag(config=True)

    # -- checkpoint and TensorBoard log storage (settings.CheckpointStorageSettings) ------

    @default("checkpoint_root")
    def _default_checkpoint_root(self) -> str:
        return os.environ.get("JUPYTER_TFENV_CHECKPOINT_ROOT") or "~/tfenv/checkpoints"

    @default("log_root")
    def _default_log_root(self) -> str:
        return os.environ.get("JUPYTER_TFENV_LOG_ROOT") or "~/tfenv/logs"

    # -- broker mode (JupyterHub: see docs/broker.md) ----------------------------------

    broker_url = Unicode(
        help=f"""Base URL of the tfenv broker (a JupyterHub service). When set, kernels are
        started through the broker and this server never talks to Docker: the broker
        decides image, uid, mounts and limits, and keeps the quotas. Default:
        ${BROKER_URL_VAR}, else '' (local mode: this server uses the Docker engine).""",
    ).tag(config=True)

    @default("broker_url")
    def _default_broker_url(self) -> str:
        return os.environ.get(BROKER_URL_VAR, "")

    broker_token = Unicode(
        help=f"""Token sent to the broker (Authorization: token …). Default:
        ${BROKER_TOKEN_VAR}, else $JUPYTERHUB_API_TOKEN. Never logged, never passed to a
        kernel.""",
    ).tag(config=True)

    @default("broker_token")
    def _default_broker_token(self) -> str:
        return os.environ.get(BROKER_TOKEN_VAR) or os.environ.get("JUPYTERHUB_API_TOKEN", "")
