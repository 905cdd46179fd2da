"""Who the hub says a token belongs to, asked once per token and window.

The broker asks JupyterHub (``HubAuth.user_for_token``) about every request's token. A
:class:`TokenLookups` replaces HubAuth's own cache (unbounded, five minutes by default):

* answers (a user's model, or ``None`` for an unknown or revoked token) are kept for
  ``max_age`` seconds (``c.TFEnvBroker.token_cache_seconds``), so a token revoked at the
  hub, or a user removed from a group, keeps its access at most that long;
* at most ``max_entries`` tokens are remembered (least recently used dropped first), so
  a flood of random tokens cannot grow the broker's memory;
* concurrent requests with the same token wait for one hub request instead of each
  making their own.

Tokens are kept by their SHA-256 only.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from typing import Any


class TokenLookups:
    """A bounded, expiring cache of the hub's answers about tokens (see the module)."""

    def __init__(self, *, max_age: float, max_entries: int = 4096) -> None:
        self.max_age = max_age
        self.max_entries = max(1, max_entries)
        self._answers: OrderedDict[str, tuple[float, dict[str, Any] | None]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[dict[str, Any] | None]] = {}

    def __len__(self) -> int:
        return len(self._answers)

    async def model(self, hub_auth: Any, token: str) -> dict[str, Any] | None:
        """The hub's model of the token's owner, or ``None`` (unknown, revoked), from
        ``hub_auth`` (a :class:`jupyterhub.services.auth.HubAuth`; its own cache is not
        used: this one replaces it)."""
        key = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        now = time.monotonic()
        cached = self._answers.get(key)
        if cached is not None:
            if now - cached[0] < self.max_age:
                self._answers.move_to_end(key)
                return cached[1]
            del self._answers[key]
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            answer = await hub_auth.user_for_token(token, use_cache=False, sync=False)
        except BaseException as err:
            # Not cached: the hub did not answer (the next request asks again).
            if isinstance(err, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(err)
                future.exception()  # retrieved: no warning when nobody else waits
            raise
        finally:
            self._pending.pop(key, None)
        future.set_result(answer)
        if self.max_age > 0:
            self._answers[key] = (time.monotonic(), answer)
            while len(self._answers) > self.max_entries:
                self._answers.popitem(last=False)
        return answer
