"""Which resources a kernel start chose (docs/choices.md), as the provisioner finds out.

A kernel start through jupyter_server carries no fields of ours: JupyterLab's session
request names only the kernelspec. So the choice travels beside it and the provisioner
looks for it, in this order:

1. ``tfenv_choices``, a keyword argument of ``start_kernel`` (nbclient:
   ``NotebookClient(nb, ...).execute(**start_kwargs(nb))`` passes the notebook's recorded
   choice; nbclient gives the kernel manager nothing of the notebook itself);
2. what JupyterLab's dialog sent just before the start (``POST /tfenv/choices``, kept
   here per notebook file and environment for :data:`PENDING_TTL` seconds, taken once);
3. what the notebook file records (``metadata.tfenv.choices`` of the file
   ``$JPY_SESSION_NAME`` names, when it is for the same environment);
4. nothing: the entry's defaults.

The values are checked against the entry's choices where they are applied
(``catalog.choices.apply_choices``; the broker checks them again), never here.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from jupyter_tfenv.catalog.choices import ChoiceError, apply_choices
from jupyter_tfenv.catalog.model import KERNEL_PREFIX, Environment
from jupyter_tfenv.errors import KernelStartError

#: Keyword argument of ``start_kernel``: the resources to choose ({"memory": "16g", …}).
CHOICES_KWARG = "tfenv_choices"
#: Seconds a choice sent by JupyterLab waits for its kernel start.
PENDING_TTL = 600.0
#: Notebook files larger than this are not read for their recorded choice.
MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024

_lock = threading.Lock()
_pending: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}


def _key(notebook: str, env_id: str) -> tuple[str, str]:
    return (os.path.normpath(notebook), env_id)


def remember(notebook: str, env_id: str, values: Mapping[str, Any]) -> None:
    """Keep ``values`` for the next start of ``env_id`` for the notebook file ``notebook``
    (an absolute path, as ``$JPY_SESSION_NAME`` names it)."""
    now = time.monotonic()
    with _lock:
        for key in [k for k, (at, _) in _pending.items() if now - at > PENDING_TTL]:
            del _pending[key]
        _pending[_key(notebook, env_id)] = (now, dict(values))


def take(notebook: str, env_id: str) -> dict[str, Any] | None:
    """The values JupyterLab sent for this start (removed), or None."""
    with _lock:
        found = _pending.pop(_key(notebook, env_id), None)
    if found is None or time.monotonic() - found[0] > PENDING_TTL:
        return None
    return found[1]


def recorded(notebook: str, env_id: str) -> dict[str, Any] | None:
    """The choice the notebook file records for ``env_id`` (``metadata.tfenv.choices``:
    ``{"environment": id, "values": {...}}``), or None. BLOCKING (reads the file)."""
    if not notebook.endswith(".ipynb"):
        return None
    try:
        if os.path.getsize(notebook) > MAX_NOTEBOOK_BYTES:
            return None
        with open(notebook, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return _recorded_in(data.get("metadata") if isinstance(data, dict) else None, env_id)


def _recorded_in(metadata: Any, env_id: str) -> dict[str, Any] | None:
    tfenv = metadata.get("tfenv") if isinstance(metadata, Mapping) else None
    choice = tfenv.get("choices") if isinstance(tfenv, Mapping) else None
    if not isinstance(choice, Mapping) or choice.get("environment") != env_id:
        return None
    values = choice.get("values")
    return dict(values) if isinstance(values, Mapping) else None


def start_kwargs(nb: Mapping[str, Any], kernel_name: str | None = None) -> dict[str, Any]:
    """The ``start_kernel`` arguments that give a headless run the choice the notebook
    records for its kernel's environment ({} when none: the defaults)::

        NotebookClient(nb, kernel_name=...).execute(**start_kwargs(nb))

    ``kernel_name``: the kernel the run starts, where it is not the notebook's kernelspec
    (``papermill -k``); a choice recorded for another environment is not taken.
    """
    metadata = nb.get("metadata") or {}
    spec = metadata.get("kernelspec") if isinstance(metadata, Mapping) else None
    name = str(spec.get("name") or "") if isinstance(spec, Mapping) else ""
    name = kernel_name or name
    if not name.startswith(KERNEL_PREFIX):
        return {}
    values = _recorded_in(metadata, name[len(KERNEL_PREFIX) :])
    return {CHOICES_KWARG: values} if values else {}


def requested(kwargs: dict[str, Any], environment: Mapping[str, Any]) -> dict[str, Any]:
    """What a start asks for (the order in the module's docstring); {}: the defaults.
    Takes :data:`CHOICES_KWARG` out of ``start_kernel``'s ``kwargs``. BLOCKING (may read
    the notebook file)."""
    explicit = kwargs.pop(CHOICES_KWARG, None)
    if explicit is not None:
        if not isinstance(explicit, Mapping):
            raise KernelStartError(f"{CHOICES_KWARG} must be a mapping, e.g. {{'memory': '16g'}}.")
        return dict(explicit)
    env_id = str(environment.get("id", ""))
    notebook = str((kwargs.get("env") or {}).get("JPY_SESSION_NAME") or "")
    if not notebook:
        return {}
    sent = take(notebook, env_id)
    if sent is not None:
        return sent
    return recorded(notebook, env_id) or {}


def chosen_environment(env: Environment, values: Mapping[str, Any]) -> Environment:
    """``env`` with the chosen resources; a choice it does not offer is a 400."""
    try:
        return apply_choices(env, values)
    except ChoiceError as err:
        raise KernelStartError(str(err), status_code=400) from err


def off_default(env: Environment, values: Mapping[str, Any]) -> bool:
    """Whether a start of ``env`` with ``values`` chose other resources than the entry's
    defaults (then no warm pool kernel, started with the defaults, will do)."""
    chosen = chosen_environment(env, values)
    return env.choices is not None and chosen.chosen != dict(env.choices.default)


def adopted(env: Environment, values: Mapping[str, Any], log: Any) -> dict[str, Any]:
    """The choice an adopted kernel's container records (its label), for its restarts; {}
    (the defaults, with a warning) when the entry no longer offers it."""
    if not values:
        return {}
    try:
        return dict(apply_choices(env, values).chosen)
    except ChoiceError as err:
        log.warning(
            "tfenv: the adopted kernel's choice %s is not offered any more (%s): its restarts "
            "get the entry's defaults",
            dict(values),
            err,
        )
        return {}
