"""The tfenv broker: the JupyterHub service that starts users' kernel containers.

In a JupyterHub deployment the users' servers never touch Docker; the broker alone holds
the socket and starts hardened kernel containers under its policy (docs/broker.md).
Run it with ``python -m jupyter_tfenv.broker`` or ``jupyter tfenv broker``.
"""

from __future__ import annotations

from typing import Any


def main(argv: list[str] | None = None) -> None:
    """Run the broker (``python -m jupyter_tfenv.broker``)."""
    from jupyter_tfenv.broker.app import TFEnvBroker  # noqa: PLC0415 - keep `import jupyter_tfenv.broker` light

    TFEnvBroker.launch_instance(argv)


def __getattr__(name: str) -> Any:
    if name == "TFEnvBroker":
        from jupyter_tfenv.broker.app import TFEnvBroker  # noqa: PLC0415

        return TFEnvBroker
    raise AttributeError(name)


__all__ = ["TFEnvBroker", "main"]
