"""Settings that the local provisioner and the broker share: one declaration, two owners.

``TFEnvKernelProvisioner`` (local mode) and ``TFEnvBroker`` (JupyterHub) both build
kernel containers and prepare checkpoint storage, so they take the same settings, under
their own config sections (``c.DockerKernelProvisioner.default_memory``,
``c.TFEnvBroker.default_memory``). Only the defaults of the storage roots differ: each
owner declares them with ``@default`` (a user's ``~/tfenv/...`` locally, ``/srv/tfenv/...``
on a hub host).
"""

from __future__ import annotations

import os

from traitlets import Bool, Dict, Enum, Float, HasTraits, Integer, List, Unicode, default

from jupyter_tfenv.checkpoints.layout import STORAGE_MODES
from jupyter_tfenv.core.paths import (
    CHECKPOINT_DIR_VAR,
    CONTAINER_CHECKPOINT_DIR,
    CONTAINER_LOG_DIR,
    LOG_DIR_VAR,
)
from jupyter_tfenv.kernels.runtimes import default_runtimes_dir


def host_memory() -> int | None:
    """Bytes of RAM of this host, or None when it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


class KernelContainerSettings(HasTraits):
    """Limits and Docker settings of kernel containers."""

    default_memory = Integer(
        help="Memory limit in bytes for environments that set none (default: 80% of RAM).",
    ).tag(config=True)

    @default("default_memory")
    def _default_default_memory(self) -> int:
        total = host_memory()
        mib = 1024**2  # whole MiB: the kernel rounds cgroup limits to pages anyway
        return int(total * 0.8) // mib * mib if total else 8 * 1024**3

    default_pids = Integer(
        4096, help="pids limit (threads count) for environments that set none."
    ).tag(config=True)

    default_shm_size = Integer(
        1024**3, help="Shared memory (/dev/shm) bytes for environments that set none."
    ).tag(config=True)

    runtimes_dir = Unicode(
        help="Host folder of prebuilt ipykernel runtimes, mounted read-only into kernels.",
    ).tag(config=True)

    @default("runtimes_dir")
    def _default_runtimes_dir(self) -> str:
        return str(default_runtimes_dir())

    docker_timeout = Float(60.0, help="Timeout of one Docker API call, in seconds.").tag(
        config=True
    )

    start_timeout = Float(
        60.0,
        help="""Seconds a container may take from start to the kernel's sockets being bound.
        Images are never pulled inside this time: `jupyter tfenv pull` does that first.""",
    ).tag(config=True)

    gpu_devices = List(
        Unicode(),
        help="""The GPUs kernels may get (indexes, UUIDs or MIG UUIDs, as Docker takes
        them). Empty (default): every device NVML reports. Set it where NVML is absent
        (the server runs without the driver's library) or only some GPUs are for kernels.""",
    ).tag(config=True)

    gpu_placement = Enum(
        ["pack", "spread"],
        "pack",
        help="""Which free device a kernel gets: pack fills a shared device before taking
        the next one; spread takes the least used one.""",
    ).tag(config=True)

    gpu_wait_timeout = Float(
        0.0,
        help="""Seconds a GPU kernel's start waits for a device to become free before it
        is refused (0: refused at once). The start timeout counts only after that.""",
    ).tag(config=True)

    allow_incompatible_gpus = Bool(
        False,
        help="""Start GPU kernels of environments whose TensorFlow cannot use this host's
        GPUs (the compatibility check: the image's CUDA build against the driver and the
        GPUs' compute capabilities; docs/gpus.md). False (default): such a start is refused
        with what to do; True: it starts (and may run on the CPU). An 'unknown' verdict
        never refuses.""",
    ).tag(config=True)


class CheckpointStorageSettings(HasTraits):
    """Where kernels keep checkpoints and TensorBoard logs (see checkpoints.py).

    ``checkpoint_root`` and ``log_root`` get their defaults from the class that mixes
    this in.
    """

    checkpoint_storage = Enum(
        list(STORAGE_MODES),
        default_value="bind",
        help=f"""Where kernels keep checkpoints ({CONTAINER_CHECKPOINT_DIR}, in
        ${CHECKPOINT_DIR_VAR}) and TensorBoard logs ({CONTAINER_LOG_DIR}, in ${LOG_DIR_VAR}):
        'bind' (folders under checkpoint_root and log_root, owned by the kernel's uid, 0700),
        'volume' (one named Docker volume per user, environment and kind; NFS and other
        drivers through checkpoint_volume_driver/_options) or 'off' (nothing is mounted).""",
    ).tag(config=True)

    checkpoint_root = Unicode(
        help="""Host folder under which each user's and environment's checkpoint folder is
        made (checkpoint_subpath), owned by the kernel's uid. Default:
        $JUPYTER_TFENV_CHECKPOINT_ROOT, else ~/tfenv/checkpoints for a local server ('~' is
        the server user's home: a visible folder that outlives kernels, containers, servers
        and virtualenvs) and /srv/tfenv/checkpoints for the broker.""",
    ).tag(config=True)

    log_root = Unicode(
        help="""Host folder of the TensorBoard log folders, laid out like checkpoint_root.
        Default: $JUPYTER_TFENV_LOG_ROOT, else ~/tfenv/logs (local) or /srv/tfenv/logs
        (broker).""",
    ).tag(config=True)

    checkpoint_subpath = Unicode(
        "{username}/{environment}",
        help="""Folder of one user and environment below checkpoint_root and log_root. Names
        are escaped (percent-style) so that no two share a folder; '{environment}' must be
        the last component and '{username}' must come before it.""",
    ).tag(config=True)

    checkpoint_volume = Unicode(
        "tfenv-checkpoints-{username}-{environment}",
        help="""Name of the checkpoint volume of a user and environment (checkpoint_storage
        = 'volume'); created with checkpoint_volume_driver and _options when missing.""",
    ).tag(config=True)

    log_volume = Unicode(
        "tfenv-logs-{username}-{environment}",
        help="Name of the TensorBoard log volume of a user and environment.",
    ).tag(config=True)

    checkpoint_volume_driver = Unicode(
        "local", help="Docker volume driver of checkpoint and log volumes."
    ).tag(config=True)

    checkpoint_volume_options = Dict(
        help="""Driver options of new checkpoint and log volumes; '{username}',
        '{environment}' (escaped) and '{kind}' (checkpoints or logs) are replaced, e.g.
        {"type": "nfs", "o": "addr=10.0.0.5,rw,nfsvers=4",
        "device": ":/export/tfenv/{kind}/{username}/{environment}"}.""",
    ).tag(config=True)

    checkpoint_helper_image = Unicode(
        "",
        help="""Image (with python3) of the short-lived containers that prepare, list and
        delete checkpoint volumes. Default: the environment's own image.""",
    ).tag(config=True)
