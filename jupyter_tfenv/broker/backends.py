"""Which :class:`~jupyter_tfenv.backends.base.KernelBackend` the broker holds, and how it is
built from the broker's traits: ``c.TFEnvBroker.backend_class``, or the class the
``c.TFEnvBroker.backend`` shorthand names ("docker", "kubernetes").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jupyter_tfenv.backends.base import KernelBackend
from jupyter_tfenv.backends.docker.backend import DockerBackend
from jupyter_tfenv.core.labels import LABEL_BROKER

if TYPE_CHECKING:
    from jupyter_tfenv.broker.app import TFEnvBroker


def make_backend(broker: TFEnvBroker) -> KernelBackend:
    """The broker's backend: ``backend_class`` (or the one ``backend`` names), given the
    broker's traits as its settings and the broker's hooks (catalog, per-user lock, log).
    """
    cls: Any = broker.backend_class or _BACKENDS[broker.backend]()
    if issubclass(cls, DockerBackend):
        return cls(
            broker,
            catalog=broker.get_catalog,
            runtime_root=broker.runtime_root,
            scope_labels={LABEL_BROKER: broker.broker_id},
            probe_cache_dir=broker.probe_cache_dir,
            probe_timeout=broker.probe_timeout,
            runtime_dir_stale_seconds=broker.runtime_dir_stale_seconds,
            max_runtime_dirs=broker.runtime_dirs_limit,  # read at each use: quotas change
            user_lock=broker.user_lock,
            strict_mounts=True,  # the broker is root
            config_section="TFEnvBroker",
            log_prefix="tfenv-broker",
            log=broker.log,
        )
    kubernetes = _kubernetes_backend()
    if issubclass(cls, kubernetes):
        from jupyter_tfenv.backends.kubernetes.settings import KubernetesSettings  # noqa: PLC0415

        return cls(
            KubernetesSettings.from_config(broker),
            catalog=broker.get_catalog,
            user_lock=broker.user_lock,
            log=broker.log,
            environment_for=lambda caller, env_id: broker.environment_for(
                caller, env_id, status=404
            ),
        )
    raise SystemExit(
        f"tfenv-broker: c.TFEnvBroker.backend_class = {cls.__name__}: the broker builds "
        "subclasses of DockerBackend or KubernetesBackend only."
    )


def _kubernetes_backend() -> type[KernelBackend]:
    from jupyter_tfenv.backends.kubernetes.backend import KubernetesBackend  # noqa: PLC0415

    return KubernetesBackend


_BACKENDS: dict[str, Any] = {"docker": lambda: DockerBackend, "kubernetes": _kubernetes_backend}
