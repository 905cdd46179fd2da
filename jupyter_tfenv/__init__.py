"""jupyter_tfenv: pinned TensorFlow environments as JupyterLab kernels in containers."""

from __future__ import annotations

from typing import Any

from jupyter_tfenv.core.version import __version__

__all__ = ["__version__"]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter-tfenv"}]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from jupyter_tfenv.server.app import TFEnvApp  # noqa: PLC0415 - keep `import jupyter_tfenv` light

    return [{"module": "jupyter_tfenv", "app": TFEnvApp}]
