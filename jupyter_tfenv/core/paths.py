"""Paths inside a kernel container (or pod), and the limits of the paths outside it.

The image is the team's; these are the only places tfenv puts anything into it.
"""

from __future__ import annotations

#: Where the product's own read-only files appear inside every kernel container.
CONTAINER_TFENV_DIR = "/opt/tfenv"
CONTAINER_LAUNCHER = f"{CONTAINER_TFENV_DIR}/launch.py"
CONTAINER_RUNTIMES = f"{CONTAINER_TFENV_DIR}/runtimes"
CONTAINER_PROBE = f"{CONTAINER_TFENV_DIR}/probe.py"
#: The TensorBoard bridge (jupyter_tfenv/tensorboard/bridge.py) in TensorBoard containers.
CONTAINER_TENSORBOARD_BRIDGE = f"{CONTAINER_TFENV_DIR}/tensorboard_bridge.py"

#: Where a kernel finds its checkpoint folder, and the variable that says so.
CONTAINER_CHECKPOINT_DIR = "/tfenv/checkpoints"
CHECKPOINT_DIR_VAR = "TFENV_CHECKPOINT_DIR"
#: Where a kernel finds its TensorBoard log folder, and the variable that says so.
CONTAINER_LOG_DIR = "/tfenv/logs"
LOG_DIR_VAR = "TFENV_LOG_DIR"
#: Where a kernel finds the checkpoint folders of the user's other environments, read-only
#: (one folder per environment, by its escaped id), and the variable that says so.
CONTAINER_OTHERS_DIR = "/tfenv/checkpoints-of"
OTHERS_DIR_VAR = "TFENV_CHECKPOINTS_OF_DIR"

#: Unix socket paths (sun_path) hold at most this many bytes: a kernel's runtime folder
#: on the host must leave room for its socket names.
SOCKET_PATH_MAX = 107
