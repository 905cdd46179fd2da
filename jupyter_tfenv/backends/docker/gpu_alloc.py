"""Which GPU devices a kernel gets: the allocation policy, pure (no Docker, no NVML).

Docker's NVIDIA device driver turns a device *count* into "the first N devices", so every
1-GPU kernel would land on GPU 0. Kernels therefore ask for specific device ids, picked
here from an inventory (NVML's devices, or an admin's ``gpu_devices`` list) and the
devices the engine's kernel containers already hold. What a container holds is in its
labels (:data:`LABEL_GPU_DEVICES`, :data:`LABEL_GPU_SHARING`), so the picture is always
recomputed from the engine: a restarted server or broker sees the same one, and nothing
here keeps state.

The local provisioner and the broker both call :func:`allocate` under :func:`start_lock`
(one start at a time per process) and re-check the engine after creating the container
(:func:`conflicts`), which also covers two processes on one engine.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jupyter_tfenv.core.labels import (
    LABEL_ENVIRONMENT,
    LABEL_GPU_CLAIMED,
    LABEL_GPU_DEVICES,
    LABEL_GPU_SHARING,
    LABEL_KERNEL_ID,
    LABEL_OWNER,
)
from jupyter_tfenv.errors import TFEnvError

EXCLUSIVE = "exclusive"
SHARED = "shared"
PACK = "pack"
SPREAD = "spread"
PLACEMENTS = (PACK, SPREAD)


class GpuUnavailableError(TFEnvError):
    """No device (or not enough) is free for a start; the message names the holders."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status
        self.http_status = status


@dataclass(frozen=True)
class Device:
    """One device kernels may get. ``id`` is what Docker is given (a UUID, an index)."""

    id: str
    index: int | None = None
    uuid: str | None = None
    name: str | None = None
    memory: int | None = None
    #: A MIG instance (its ``id`` is the MIG UUID) of the GPU ``index``.
    mig: bool = False

    def aliases(self) -> set[str]:
        names = {self.id}
        if self.uuid:
            names.add(self.uuid)
        if self.index is not None and not self.mig:
            names.add(str(self.index))
        return names

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "memory": self.memory,
            "mig": self.mig,
        }


@dataclass(frozen=True)
class Policy:
    """How an environment holds its devices."""

    exclusive: bool = True
    #: Kernels per device when shared (1 when exclusive).
    per_device: int = 1

    @classmethod
    def of(cls, sharing: str, per_device: int | None) -> Policy:
        if sharing == SHARED:
            return cls(exclusive=False, per_device=max(1, int(per_device or 2)))
        return cls()

    def label(self) -> str:
        return EXCLUSIVE if self.exclusive else f"{SHARED}:{self.per_device}"

    @classmethod
    def from_label(cls, text: str) -> Policy:
        if text.startswith(f"{SHARED}:"):
            try:
                return cls(exclusive=False, per_device=max(1, int(text.split(":", 1)[1])))
            except ValueError:
                pass
        return cls()


@dataclass(frozen=True)
class Holding:
    """The devices one kernel container holds (from its labels)."""

    container_id: str
    kernel_id: str
    owner: str
    environment: str
    devices: tuple[str, ...]
    policy: Policy
    #: When the devices were picked (ns): who came first when two starts collided.
    claimed: int = 0

    def order(self) -> tuple[int, str]:
        return (self.claimed, self.container_id)


def labels_for(devices: Sequence[str], policy: Policy, claimed: int) -> dict[str, str]:
    """The labels that record a kernel's devices on its container (``claimed``: when they
    were picked, ns since the epoch)."""
    return {
        LABEL_GPU_DEVICES: ",".join(devices),
        LABEL_GPU_SHARING: policy.label(),
        LABEL_GPU_CLAIMED: str(claimed),
    }


def holding_from_labels(
    container_id: str,
    labels: Mapping[str, str],
    *,
    created: int = 0,
    kernel_label: str = LABEL_KERNEL_ID,
    owner_label: str = LABEL_OWNER,
    environment_label: str = LABEL_ENVIRONMENT,
) -> Holding | None:
    """A container's holding, or None when it holds no allocated device."""
    devices = tuple(d for d in (labels.get(LABEL_GPU_DEVICES) or "").split(",") if d)
    if not devices:
        return None
    return Holding(
        container_id=container_id,
        kernel_id=labels.get(kernel_label, ""),
        owner=labels.get(owner_label, ""),
        environment=labels.get(environment_label, ""),
        devices=devices,
        policy=Policy.from_label(labels.get(LABEL_GPU_SHARING, EXCLUSIVE)),
        claimed=_claimed(labels.get(LABEL_GPU_CLAIMED), created),
    )


def _claimed(label: str | None, created: int) -> int:
    """The claim time of a label, else Docker's creation time (seconds) in ns."""
    try:
        return int(label or "")
    except ValueError:
        return created * 1_000_000_000


# -- inventory -------------------------------------------------------------------------------


def inventory_from_config(ids: Iterable[str]) -> list[Device]:
    """An admin's ``gpu_devices`` list (indexes, UUIDs or MIG UUIDs), in that order."""
    devices = []
    for position, raw in enumerate(ids):
        text = str(raw).strip()
        if not text:
            continue
        index = int(text) if text.isdigit() else None
        devices.append(
            Device(
                id=text,
                index=index if index is not None else position,
                uuid=None if text.isdigit() else text,
                mig=text.startswith("MIG-"),
            )
        )
    return devices


def inventory_from_nvml(overview: Mapping[str, Any]) -> list[Device]:
    """The devices of :func:`jupyter_tfenv.backends.docker.gpu.gpu_overview` (MIG instances
    instead of
    their GPU where it has any), by UUID: indexes change when a GPU drops out."""
    if overview.get("state") != "ok":
        return []
    devices = []
    for gpu in overview.get("gpus") or []:
        if gpu.get("error") is not None or gpu.get("index") is None:
            continue
        migs = gpu.get("mig_devices") or []
        if migs:
            for mig in migs:
                if mig.get("uuid"):
                    devices.append(
                        Device(
                            id=str(mig["uuid"]),
                            index=int(gpu["index"]),
                            uuid=str(mig["uuid"]),
                            name=mig.get("name") or gpu.get("name"),
                            memory=mig.get("memory_total"),
                            mig=True,
                        )
                    )
            continue
        uuid = gpu.get("uuid")
        devices.append(
            Device(
                id=str(uuid or gpu["index"]),
                index=int(gpu["index"]),
                uuid=str(uuid) if uuid else None,
                name=gpu.get("name"),
                memory=gpu.get("memory_total"),
            )
        )
    return devices


def inventory(configured: Sequence[str], overview: Mapping[str, Any] | None) -> list[Device]:
    """``gpu_devices`` when the admin set it, else NVML's devices."""
    if configured:
        return inventory_from_config(configured)
    return inventory_from_nvml(overview or {})


# -- allocation ------------------------------------------------------------------------------


def _load(devices: Sequence[Device], holdings: Iterable[Holding]) -> dict[str, list[Holding]]:
    load: dict[str, list[Holding]] = {d.id: [] for d in devices}
    for holding in holdings:
        for device in holding.devices:
            if device in load:
                load[device].append(holding)
    return load


def _fits(holders: Sequence[Holding], policy: Policy) -> bool:
    if policy.exclusive:
        return not holders
    if any(h.policy.exclusive for h in holders):
        return False
    return len(holders) < policy.per_device


def resolve_ids(ids: Sequence[str], devices: Sequence[Device]) -> tuple[str, ...]:
    """Explicit ids of a catalog entry (index or UUID) → inventory ids, or a 400."""
    found = []
    for wanted in ids:
        match = next((d for d in devices if str(wanted) in d.aliases()), None)
        if match is None:
            known = ", ".join(d.id for d in devices) or "none"
            raise GpuUnavailableError(
                f"GPU '{wanted}' is not one of the GPUs kernels may use here ({known}); "
                "fix 'gpus' in the catalog entry, or the server's gpu_devices setting.",
                status=400,
            )
        found.append(match.id)
    return tuple(found)


def allocate(
    devices: Sequence[Device],
    holdings: Iterable[Holding],
    count: int,
    policy: Policy,
    *,
    placement: str = PACK,
    prefer: Sequence[str] = (),
) -> tuple[str, ...] | None:
    """``count`` device ids that can take one more kernel of ``policy``, or None.

    ``prefer``: ids to keep when still free (a restarting kernel keeps its devices).
    ``pack`` fills the busiest device that has room first, ``spread`` the idlest one;
    ties go to inventory order.
    """
    load = _load(devices, holdings)
    free = [d for d in devices if _fits(load[d.id], policy)]
    if len(free) < count:
        return None
    order = {d.id: n for n, d in enumerate(devices)}
    kept = [d.id for d in free if d.id in prefer]
    sign = -1 if placement == PACK else 1
    rest = sorted(
        (d.id for d in free if d.id not in kept),
        key=lambda i: (sign * len(load[i]), order[i]),
    )
    return tuple([*kept, *rest][:count])


def check_explicit(
    ids: Sequence[str], devices: Sequence[Device], holdings: Iterable[Holding], policy: Policy
) -> bool:
    """Whether the named devices can all take one more kernel of ``policy``."""
    load = _load(devices, holdings)
    return all(_fits(load.get(i, []), policy) for i in ids)


def conflicts(mine: Holding, holdings: Iterable[Holding]) -> list[Holding]:
    """Holdings made before ``mine`` that ``mine`` overcommits (the engine's re-check).

    Both sides of a collision compute the same order, so only the later one backs out.
    """
    earlier = [
        h for h in holdings if h.container_id != mine.container_id and h.order() < mine.order()
    ]
    load = _load([Device(id=d) for d in mine.devices], earlier)
    return sorted(
        {
            h.container_id: h
            for d in mine.devices
            if not _fits(load[d], mine.policy)
            for h in load[d]
        }.values(),
        key=Holding.order,
    )


def pick(
    gpus: str | int | Sequence[str],
    policy: Policy,
    devices: Sequence[Device],
    holdings: Sequence[Holding],
    *,
    env_id: str,
    viewer: str | None,
    placement: str = PACK,
    prefer: Sequence[str] = (),
    unusable: Mapping[str, str] | None = None,
) -> tuple[str, ...] | None:
    """The device ids for a start of an environment with ``gpus``, or None when there is
    nothing to allocate (``none``, ``all``, or no inventory: Docker then decides, and says
    so when the engine has no NVIDIA runtime). Raises :class:`GpuUnavailableError`.

    ``unusable``: devices (by index or UUID) the environment's build cannot run on, with
    why (compat_gate.unusable_devices); a count is picked among the others. Named ids are
    not filtered: the compatibility check judged those very devices."""
    if isinstance(gpus, str) or not devices:
        return None
    left_out = ""
    if isinstance(gpus, int) and unusable:
        usable = [d for d in devices if not d.aliases() & unusable.keys()]
        left_out = "; ".join(
            sorted({unusable[a] for d in devices for a in d.aliases() & unusable.keys()})
        )
        if len(usable) < gpus <= len(devices):
            raise GpuUnavailableError(
                f"'{env_id}' asks for {gpus} GPU{'s' if gpus != 1 else ''}, but only "
                f"{len(usable)} of the {len(devices)} GPUs kernels may use here can run its "
                f"TensorFlow build. Not on: {left_out}. Lower 'gpus' in the catalog entry, "
                "or use an image built for those GPUs.",
                status=409,
            )
        devices = usable
    if isinstance(gpus, int):
        if gpus > len(devices):
            raise GpuUnavailableError(
                f"'{env_id}' asks for {gpus} GPUs, but kernels may use only {len(devices)} "
                "here; lower 'gpus' in the catalog entry.",
                status=400,
            )
        chosen = allocate(devices, holdings, gpus, policy, placement=placement, prefer=prefer)
        if chosen is None:
            message = refusal(env_id, gpus, policy, devices, holdings, viewer=viewer)
            if left_out:
                message += f" (Not counted, its TensorFlow build cannot run there: {left_out}.)"
            raise GpuUnavailableError(message)
        return chosen
    ids = resolve_ids(list(gpus), devices)
    if not check_explicit(ids, devices, holdings, policy):
        raise GpuUnavailableError(
            refusal(env_id, len(ids), policy, devices, holdings, viewer=viewer)
        )
    return ids


# -- what users see --------------------------------------------------------------------------


def _kernels(holdings: Sequence[Holding]) -> str:
    return ", ".join(
        f"kernel {h.kernel_id[:8]} ({h.environment}) on GPU {','.join(h.devices)}" for h in holdings
    )


def refusal(
    env_id: str,
    count: int,
    policy: Policy,
    devices: Sequence[Device],
    holdings: Iterable[Holding],
    *,
    viewer: str | None,
) -> str:
    """Why no device is free, naming the holders: ``viewer``'s own kernels by name,
    other users' as counts (None: everyone's by name, e.g. a single-user server)."""
    held = [h for h in holdings if any(d in {x.id for x in devices} for d in h.devices)]
    busy = {d for h in held for d in h.devices}
    mine = [h for h in held if viewer is None or h.owner == viewer]
    others = [h for h in held if h not in mine]
    mode = "exclusive" if policy.exclusive else f"shared, {policy.per_device} kernels per GPU"
    need = "1 GPU" if count == 1 else f"{count} GPUs"
    parts = [
        f"No free GPU for '{env_id}' (it needs {need}, {mode}): {len(busy)} of the "
        f"{len(devices)} GPUs kernels may use are held."
    ]
    if mine:
        who = "Your kernels" if viewer is not None else "Kernels"
        parts.append(f"{who}: {_kernels(mine)}.")
    if others:
        users = len({h.owner for h in others})
        parts.append(
            f"Other users: {len(others)} kernel{'s' if len(others) != 1 else ''} of "
            f"{users} user{'s' if users != 1 else ''}."
        )
    parts.append("Shut down a GPU kernel you no longer need, or try again later.")
    return " ".join(parts)


def table(
    devices: Sequence[Device], holdings: Iterable[Holding], *, viewer: str | None
) -> list[dict[str, Any]]:
    """Each device with its holders, for ``GET /tfenv/gpus`` (others' kernels anonymous)."""
    load = _load(devices, holdings)
    rows = []
    for device in devices:
        holders: list[dict[str, Any]] = []
        for h in load[device.id]:
            if viewer is None or h.owner == viewer:
                holders.append(
                    {
                        "kernel_id": h.kernel_id,
                        "owner": h.owner,
                        "environment": h.environment,
                        "sharing": h.policy.label(),
                    }
                )
            else:
                holders.append({"kernel_id": None, "owner": None, "sharing": h.policy.label()})
        rows.append({**device.to_dict(), "holders": holders})
    return rows


# -- one start at a time ---------------------------------------------------------------------

_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def start_lock() -> asyncio.Lock:
    """This event loop's allocation lock: held from reading the engine's holdings until the
    container carrying the new labels exists."""
    loop = asyncio.get_running_loop()
    lock = _LOCKS.get(loop)
    if lock is None:
        lock = _LOCKS[loop] = asyncio.Lock()
    return lock
