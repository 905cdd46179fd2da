"""The warm pool as the provisioner sees it: one per server process, set by the server.

``jupyter_tfenv.lifecycle.pool`` registers its ``KernelPool`` here at server start; the
provisioner asks it for a kernel before it starts a container. The provisioner never
imports the pool itself (it is a layer above).
"""

from __future__ import annotations

from typing import Any, Protocol


class PoolLike(Protocol):
    """What the provisioner asks of the warm pool (jupyter_tfenv.lifecycle.pool.KernelPool)."""

    #: The containers of the pool kernels taken so far (the panel's "from pool").
    taken: set[str]

    async def take(self, env_id: str, cwd: str) -> dict[str, Any] | None: ...

    async def make_room(self, *, gpus: bool = False) -> bool:
        """Give up a pool kernel (``gpus``: one with GPUs) for a start the user's quota
        refused; whether one went."""
        ...


_POOL: PoolLike | None = None


def current_pool() -> PoolLike | None:
    """The running server's warm pool (None: no pool, e.g. outside a server)."""
    return _POOL


def set_pool(pool: PoolLike | None) -> None:
    global _POOL  # noqa: PLW0603 - one pool per server process
    _POOL = pool
