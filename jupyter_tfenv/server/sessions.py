"""The session manager of a server that keeps kernels (``keep_kernels_on_stop``).

jupyter_server drops a session whose kernel its kernel manager does not know ("culled or
died unexpectedly"). Right after a restart the kept kernels are not known yet: the
start-up adoption brings them back a moment later. A request that meets such a session
meanwhile (JupyterLab, reconnecting, lists the sessions and asks for the notebook's by
path) would drop it, and the notebook would get a new kernel beside its kept one. Here
such a request waits for the adoption first, at most :data:`ADOPTION_WAIT` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from jupyter_server.services.sessions.sessionmanager import SessionManager

#: Seconds a request waits for the start-up adoption (the server's own bound on it).
ADOPTION_WAIT = 30.0


class KeepingSessionManager(SessionManager):
    """A :class:`SessionManager` whose sessions outlive the start-up adoption's gap."""

    #: The server's start-up adoption, while it runs (set by TFEnvApp).
    adoption: asyncio.Future[Any] | None = None

    async def row_to_model(self, row: Any, tolerate_culled: bool = False) -> Any:
        pending = self.adoption
        unknown = row["kernel_id"] not in self.kernel_manager
        if pending is not None and not pending.done() and unknown:
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(pending), ADOPTION_WAIT)
        return await super().row_to_model(row, tolerate_culled=tolerate_culled)
