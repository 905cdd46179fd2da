"""The labels on every container, volume and pod tfenv makes: how it finds its own.

One list for every backend and for the broker: a container started by a local server, by
the broker on Docker, or a pod on Kubernetes carries the same names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

LABEL_PREFIX = "org.jupyter.tfenv"
LABEL_OWNER = f"{LABEL_PREFIX}.owner"
LABEL_KERNEL_ID = f"{LABEL_PREFIX}.kernel-id"
LABEL_SERVER_INSTANCE = f"{LABEL_PREFIX}.server-instance"
LABEL_SERVER_HOST = f"{LABEL_PREFIX}.server-host"
LABEL_SERVER_PID = f"{LABEL_PREFIX}.server-pid"
LABEL_SERVER_START = f"{LABEL_PREFIX}.server-start"
LABEL_ENVIRONMENT = f"{LABEL_PREFIX}.environment"
LABEL_IMAGE_ID = f"{LABEL_PREFIX}.image-id"
LABEL_IMAGE_REF = f"{LABEL_PREFIX}.image-ref"
LABEL_RUNTIME_DIR = f"{LABEL_PREFIX}.runtime-dir"
#: Set (to the broker's service name) on kernel containers the tfenv broker started. Their
#: server-pid labels name the broker, whose restart must not orphan them: never reaped.
LABEL_BROKER = f"{LABEL_PREFIX}.broker"
#: A pool kernel (jupyter_tfenv.lifecycle.pool): started ahead, for no notebook yet.
LABEL_POOL = f"{LABEL_PREFIX}.pool"
#: The uid a broker kernel runs as (its owner's Unix account).
LABEL_UID = f"{LABEL_PREFIX}.uid"
#: GPUs a broker kernel holds (counted against max_gpus_per_user).
LABEL_GPUS = f"{LABEL_PREFIX}.gpus"
#: The owner's JupyterHub server name ("" for the default server).
LABEL_HUB_SERVER = f"{LABEL_PREFIX}.hub-server"
#: The device ids a kernel container holds, comma separated (as passed to Docker).
LABEL_GPU_DEVICES = f"{LABEL_PREFIX}.gpu-devices"
#: ``exclusive`` or ``shared:<kernels per device>``: how the container holds them.
LABEL_GPU_SHARING = f"{LABEL_PREFIX}.gpu-sharing"
#: When the devices were picked (ns since the epoch): who came first when two starts
#: collided (Docker's own creation time has whole seconds in its container list).
LABEL_GPU_CLAIMED = f"{LABEL_PREFIX}.gpu-claimed"
#: Marks probe containers (never kernels: they have no kernel-id label).
LABEL_PROBE = f"{LABEL_PREFIX}.probe"
#: Marks TensorBoard containers (jupyter_tfenv.tensorboard), valued with the TensorBoard's
#: name (``env-<id>``, ``compare``). Never kernels: they have no kernel-id label.
LABEL_TENSORBOARD = f"{LABEL_PREFIX}.tensorboard"
#: Labels of the volumes tfenv creates, and of its checkpoint helper containers.
LABEL_STORAGE_KIND = f"{LABEL_PREFIX}.storage-kind"
LABEL_STORAGE_ENV = f"{LABEL_PREFIX}.storage-environment"
LABEL_HELPER = f"{LABEL_PREFIX}.checkpoint-helper"
#: The resources the kernel's start chose (docs/choices.md), as JSON ({"memory": "16g", …});
#: absent when its environment offers no choices. A server that adopts the kernel reads it
#: back, so that a restart keeps the choice.
LABEL_CHOICES = f"{LABEL_PREFIX}.choices"


def choices_label(chosen: Mapping[str, Any]) -> dict[str, str]:
    """The :data:`LABEL_CHOICES` label for the resources a start chose ({} for none)."""
    return {LABEL_CHOICES: json.dumps(dict(chosen), sort_keys=True)} if chosen else {}


def choices_of(labels: Mapping[str, str]) -> dict[str, Any]:
    """The choice :func:`choices_label` recorded ({} when none or unreadable)."""
    try:
        values = json.loads(labels.get(LABEL_CHOICES) or "{}")
    except ValueError:
        return {}
    if not isinstance(values, dict):
        return {}
    return {str(k): v for k, v in values.items() if isinstance(v, str | int | float)}
