"""A papermill engine whose runs take the notebook's recorded choice (docs/choices.md).

papermill starts the kernel through nbclient without arguments of ours, so a tfenv kernel
gets its entry's defaults. ``papermill --engine tfenv in.ipynb out.ipynb`` (this engine, found
through the ``papermill.engine`` entry point) starts it with what the notebook records in
``metadata.tfenv.choices`` for the kernel's environment (``-k`` may name another kernel: a
choice recorded for another environment is not taken), else the defaults. From Python,
``papermill.execute_notebook(..., engine_name="tfenv", tfenv_choices={...})`` chooses
explicitly. Everything else is papermill's own nbclient engine.

Imported by papermill only (an optional dependency of tfenv).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from jupyter_client.manager import AsyncKernelManager
from papermill.engines import NBClientEngine

from jupyter_tfenv.errors import KernelStartError
from jupyter_tfenv.provisioning.choices import CHOICES_KWARG, start_kwargs


class ChoosingKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel starts pass :attr:`start_arguments` (a subclass per
    run holds the run's: nbclient makes the manager from a class)."""

    start_arguments: ClassVar[dict[str, Any]] = {}

    async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]
        await super().start_kernel(**{**self.start_arguments, **kw})


def manager_class(arguments: Mapping[str, Any]) -> type[ChoosingKernelManager]:
    """A :class:`ChoosingKernelManager` whose starts pass ``arguments``."""
    return type(
        "ChoosingKernelManager", (ChoosingKernelManager,), {"start_arguments": dict(arguments)}
    )


def run_arguments(
    nb: Mapping[str, Any], kernel_name: str, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The ``start_kernel`` arguments of a run: ``tfenv_choices`` given to papermill
    (taken out of ``kwargs``), else what the notebook records for ``kernel_name``."""
    explicit = kwargs.pop(CHOICES_KWARG, None)
    if explicit is not None:
        if not isinstance(explicit, Mapping):
            raise KernelStartError(f"{CHOICES_KWARG} must be a mapping, e.g. {{'memory': '16g'}}.")
        return {CHOICES_KWARG: dict(explicit)}
    return start_kwargs(nb, kernel_name)


class TFEnvEngine(NBClientEngine):
    """papermill's nbclient engine, starting the kernel with the run's choice."""

    @classmethod
    def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
        arguments = run_arguments(nb_man.nb, kernel_name, kwargs)
        if arguments and "kernel_manager_class" not in kwargs and "km" not in kwargs:
            kwargs["kernel_manager_class"] = manager_class(arguments)
        return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)
