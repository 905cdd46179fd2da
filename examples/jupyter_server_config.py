# jupyter_tfenv: an example Jupyter Server configuration.
#
# Use it as it is:            jupyter lab --config examples/jupyter_server_config.py
# or copy what you need into  ~/.jupyter/jupyter_server_config.py
# (`jupyter --paths` lists the config folders; `jupyter tfenv` reads the same files, and
# `jupyter tfenv check --config THIS_FILE` checks what the server would run).
#
# Everything here is optional: the extension is enabled on install, and with no catalog
# the kernel picker simply shows no tfenv-* kernels.

from pathlib import Path

c = get_config()  # type: ignore[name-defined]  # noqa: F821 - provided by traitlets

HERE = Path(__file__).resolve().parent

# ----------------------------------------------------------------------------- catalog
# Team catalog files (YAML or JSON, schema: schema/catalog.schema.json), for example one
# kept in the team's repository. Files are re-read when they change: an edit shows up in
# the kernel picker without a restart. $JUPYTER_TFENV_CATALOG (paths separated by ':')
# is the default when this is not set.
c.TFEnvCatalog.catalog_files = [str(HERE / "demo-catalog.yaml")]

# Environments can also be declared inline, in the catalog file's shape:
# c.TFEnvCatalog.environments = [
#     {
#         "id": "tf-2.20-gpu0",
#         "display_name": "TensorFlow 2.20.0 (GPU 0)",
#         "image": "tensorflow/tensorflow:2.20.0-gpu-jupyter",
#         "gpus": ["0"],
#         "resources": {"memory": "16g", "shm_size": "2g"},
#         "mounts": [{"source": "/data/imagenet", "target": "/data/imagenet"}],
#     },
# ]

# How images must be pinned: "tags" (a version tag or a digest; the default), "digests"
# (repo@sha256:... only) or "any" (also :latest; not recommended).
# c.TFEnvCatalog.pinning = "tags"

# ------------------------------------------------------------------- kernel containers
# Kernels run as the server's own uid:gid (uid 0 is refused). A server that runs as root
# can hand kernels to another user ($JUPYTER_TFENV_KERNEL_UID / _GID do the same), but
# then what JupyterLab makes (New Folder, uploads) is root's and the kernel cannot write
# into it: the server warns at start; README, "PermissionError when a kernel writes a file".
# Better: run the server as the kernels' user.
# c.DockerKernelProvisioner.uid = 1000
# c.DockerKernelProvisioner.gid = 1000

# Seconds from container start to the kernel's sockets being bound.
c.DockerKernelProvisioner.start_timeout = 120

# Which host folder is mounted read-write at the same path: the server's root_dir
# ("root_dir", the default) or only the notebook's own folder ("cwd").
# c.DockerKernelProvisioner.mount_root = "root_dir"

# Kernel ports: ZeroMQ IPC sockets on no network ("ipc", the default), or TCP on
# 127.0.0.1 for engines where Unix sockets cannot cross into a container (Docker Desktop).
# c.DockerKernelProvisioner.transport = "ipc"

# Limits for environments whose catalog entry sets none.
# c.DockerKernelProvisioner.default_memory = 8 * 1024**3
# c.DockerKernelProvisioner.default_pids = 4096

# Server environment variables passed to kernels; nothing else from the server's
# environment reaches a container.
# c.DockerKernelProvisioner.env_allowlist = ["LANG", "LC_ALL", "LC_CTYPE", "TZ"]

# ------------------------------------------------------------------------- the server
# Remove this user's kernel containers left behind by a server that died, at start-up.
# c.TFEnvApp.reap_orphans_on_start = True
