"""The GPU allocation policy (jupyter_tfenv.backends.docker.gpu_alloc): pure, no Docker, no NVML."""

from __future__ import annotations

from typing import Any

import pytest

from jupyter_tfenv.backends.docker import gpu_alloc
from jupyter_tfenv.backends.docker.gpu_alloc import (
    Device,
    GpuUnavailableError,
    Holding,
    Policy,
    allocate,
    conflicts,
    holding_from_labels,
    inventory_from_config,
    inventory_from_nvml,
    labels_for,
    pick,
    refusal,
    table,
)
from jupyter_tfenv.catalog.validation import environment_from_dict
from jupyter_tfenv.errors import CatalogError

FOUR = inventory_from_config(["0", "1", "2", "3"])
EXCLUSIVE = Policy()
SHARED2 = Policy.of("shared", 2)


def held(
    cid: str, devices: tuple[str, ...], *, owner: str = "alice", policy: Policy = EXCLUSIVE
) -> Holding:
    return Holding(
        container_id=cid,
        kernel_id=f"kernel-{cid}",
        owner=owner,
        environment="tf",
        devices=devices,
        policy=policy,
        claimed=int(cid.strip("c") or 0),
    )


def test_inventory_from_config_keeps_order_and_kinds() -> None:
    devices = inventory_from_config(["2", "GPU-aaaa", "MIG-bbbb", ""])
    assert [d.id for d in devices] == ["2", "GPU-aaaa", "MIG-bbbb"]
    assert devices[0].index == 2 and devices[0].uuid is None
    assert devices[1].uuid == "GPU-aaaa" and not devices[1].mig
    assert devices[2].mig


def test_inventory_from_nvml_by_uuid_and_mig_instead_of_its_gpu() -> None:
    overview = {
        "state": "ok",
        "gpus": [
            {"index": 0, "uuid": "GPU-0", "name": "A100", "memory_total": 80, "mig_devices": []},
            {
                "index": 1,
                "uuid": "GPU-1",
                "mig_devices": [
                    {"uuid": "MIG-1a", "name": "1g.10gb", "memory_total": 10},
                    {"uuid": "MIG-1b", "memory_total": 10},
                ],
            },
            {"index": 2, "error": "NVML: lost", "processes": []},
        ],
    }
    devices = inventory_from_nvml(overview)
    assert [d.id for d in devices] == ["GPU-0", "MIG-1a", "MIG-1b"]
    assert devices[0].memory == 80 and devices[0].aliases() == {"GPU-0", "0"}
    assert devices[1].mig and devices[1].index == 1 and "1" not in devices[1].aliases()
    assert inventory_from_nvml({"state": "no_driver", "gpus": []}) == []


def test_exclusive_picks_distinct_free_devices_in_order() -> None:
    assert allocate(FOUR, [], 1, EXCLUSIVE) == ("0",)
    holdings = [held("c1", ("0",)), held("c2", ("2",))]
    assert allocate(FOUR, holdings, 1, EXCLUSIVE) == ("1",)
    assert allocate(FOUR, holdings, 2, EXCLUSIVE) == ("1", "3")
    assert allocate(FOUR, holdings, 3, EXCLUSIVE) is None


def test_shared_limit_pack_and_spread() -> None:
    one = [held("c1", ("0",), policy=SHARED2)]
    assert allocate(FOUR, one, 1, SHARED2, placement="pack") == ("0",)
    assert allocate(FOUR, one, 1, SHARED2, placement="spread") == ("1",)
    full = [held("c1", ("0",), policy=SHARED2), held("c2", ("0",), policy=SHARED2)]
    assert allocate(FOUR, full, 1, SHARED2, placement="pack") == ("1",)
    # A shared kernel never joins an exclusive one, nor an exclusive one a shared one.
    assert allocate(FOUR, [held("c1", ("0",))], 1, SHARED2, placement="pack") == ("1",)
    assert allocate(FOUR, one, 1, EXCLUSIVE) == ("1",)


def test_eight_shared_kernels_fill_four_devices_two_each() -> None:
    for placement in gpu_alloc.PLACEMENTS:
        holdings: list[Holding] = []
        for n in range(8):
            chosen = allocate(FOUR, holdings, 1, SHARED2, placement=placement)
            assert chosen is not None
            holdings.append(held(f"c{n}", chosen, policy=SHARED2))
        counts = {d.id: sum(d.id in h.devices for h in holdings) for d in FOUR}
        assert counts == {"0": 2, "1": 2, "2": 2, "3": 2}
        assert allocate(FOUR, holdings, 1, SHARED2, placement=placement) is None


def test_restart_prefers_its_devices() -> None:
    holdings = [held("c1", ("0",))]
    assert allocate(FOUR, holdings, 1, EXCLUSIVE, prefer=("3",)) == ("3",)
    assert allocate(FOUR, holdings, 1, EXCLUSIVE, prefer=("0",)) == ("1",)  # taken meanwhile


def test_labels_round_trip() -> None:
    labels = {
        **labels_for(("1", "3"), SHARED2, 7),
        "org.jupyter.tfenv.kernel-id": "k1",
        "org.jupyter.tfenv.owner": "bob",
        "org.jupyter.tfenv.environment": "tf",
    }
    holding = holding_from_labels("cid", labels, created=5)
    assert holding is not None
    assert holding.devices == ("1", "3") and holding.policy == SHARED2
    assert (holding.owner, holding.kernel_id, holding.claimed) == ("bob", "k1", 7)
    del labels[gpu_alloc.LABEL_GPU_CLAIMED]
    assert holding_from_labels("cid", labels, created=5).claimed == 5_000_000_000  # type: ignore[union-attr]
    assert holding_from_labels("cid", {"org.jupyter.tfenv.kernel-id": "k"}) is None
    assert Policy.from_label("shared:x") == EXCLUSIVE


def test_pick_counts_ids_and_what_is_not_allocated() -> None:
    assert pick("all", EXCLUSIVE, FOUR, [], env_id="tf", viewer=None) is None
    assert pick(1, EXCLUSIVE, [], [], env_id="tf", viewer=None) is None  # no inventory
    assert pick(2, EXCLUSIVE, FOUR, [], env_id="tf", viewer=None) == ("0", "1")
    uuids = [Device(id="GPU-a", index=0, uuid="GPU-a"), Device(id="GPU-b", index=1, uuid="GPU-b")]
    assert pick(("1",), EXCLUSIVE, uuids, [], env_id="tf", viewer=None) == ("GPU-b",)
    with pytest.raises(GpuUnavailableError) as err:
        pick(("7",), EXCLUSIVE, FOUR, [], env_id="tf", viewer=None)
    assert err.value.status == 400 and "'7' is not one of" in err.value.message
    with pytest.raises(GpuUnavailableError) as err:
        pick(("0",), EXCLUSIVE, FOUR, [held("c1", ("0",))], env_id="tf", viewer=None)
    assert err.value.status == 409
    with pytest.raises(GpuUnavailableError) as err:
        pick(5, EXCLUSIVE, FOUR, [], env_id="tf", viewer=None)
    assert err.value.status == 400 and "only 4" in err.value.message


def test_a_count_is_picked_among_the_gpus_the_build_runs_on() -> None:
    """On a host whose GPUs differ (compat_gate.unusable_devices): the others are left out,
    and a refusal says why they do not count."""
    why = "GPU 0 (Tesla K80): it is older than every architecture the build has code for"
    unusable = {"0": why, "GPU-k80": why}
    assert pick(1, EXCLUSIVE, FOUR, [], env_id="tf", viewer=None, unusable=unusable) == ("1",)
    assert pick(3, EXCLUSIVE, FOUR, [], env_id="tf", viewer=None, unusable=unusable) == (
        "1",
        "2",
        "3",
    )
    with pytest.raises(GpuUnavailableError) as err:
        pick(4, EXCLUSIVE, FOUR, [], env_id="tf", viewer=None, unusable=unusable)
    assert err.value.status == 409
    assert err.value.message.startswith(
        "'tf' asks for 4 GPUs, but only 3 of the 4 GPUs kernels may use here can run its "
        f"TensorFlow build. Not on: {why}."
    )
    busy = [held("c1", ("1",)), held("c2", ("2",)), held("c3", ("3",))]
    with pytest.raises(GpuUnavailableError) as err:
        pick(1, EXCLUSIVE, FOUR, busy, env_id="tf", viewer=None, unusable=unusable)
    assert "3 of the 3 GPUs kernels may use are held" in err.value.message
    assert err.value.message.endswith(
        f"(Not counted, its TensorFlow build cannot run there: {why}.)"
    )
    # By UUID too; named devices are not filtered (the compatibility check judged them).
    uuids = [Device(id="GPU-k80", index=0, uuid="GPU-k80"), Device(id="GPU-a", index=1)]
    assert pick(1, EXCLUSIVE, uuids, [], env_id="tf", viewer=None, unusable=unusable) == ("GPU-a",)
    assert pick(("0",), EXCLUSIVE, FOUR, [], env_id="tf", viewer=None, unusable=unusable) == ("0",)


def test_refusal_names_own_kernels_and_counts_others() -> None:
    holdings = [
        held("c1", ("0",), owner="alice"),
        held("c2", ("1",), owner="alice"),
        held("c3", ("2",), owner="bob"),
        held("c4", ("3",), owner="carol"),
    ]
    text = refusal("tf", 1, EXCLUSIVE, FOUR, holdings, viewer="alice")
    assert "4 of the 4 GPUs" in text
    assert "kernel kernel-c (tf) on GPU 0" in text and "on GPU 1" in text
    assert "Other users: 2 kernels of 2 users." in text
    assert "bob" not in text and "carol" not in text and "GPU 2" not in text
    assert "kernel-c" not in refusal("tf", 1, EXCLUSIVE, FOUR, holdings, viewer="dave")
    with pytest.raises(GpuUnavailableError) as err:
        pick(1, EXCLUSIVE, FOUR, holdings, env_id="tf", viewer="bob")
    assert "Your kernels: kernel kernel-c (tf) on GPU 2." in err.value.message


def test_table_hides_other_users_kernels() -> None:
    rows = table(
        FOUR, [held("c1", ("0",), owner="alice"), held("c2", ("1",), owner="bob")], viewer="alice"
    )
    assert rows[0]["holders"] == [
        {"kernel_id": "kernel-c1", "owner": "alice", "environment": "tf", "sharing": "exclusive"}
    ]
    assert rows[1]["holders"] == [{"kernel_id": None, "owner": None, "sharing": "exclusive"}]
    assert rows[2]["holders"] == [] and rows[3]["id"] == "3"


def test_conflicts_only_the_later_start_backs_out() -> None:
    first = held("c1", ("0",))
    second = held("c2", ("0",))
    assert conflicts(second, [first, second]) == [first]
    assert conflicts(first, [first, second]) == []
    a = held("c1", ("0",), policy=SHARED2)
    b = held("c2", ("0",), policy=SHARED2)
    c = held("c3", ("0",), policy=SHARED2)
    assert conflicts(b, [a, b, c]) == [] and conflicts(c, [a, b, c]) == [a, b]


def test_catalog_gpu_sharing_fields() -> None:
    base = {"id": "tf", "image": "python:3.11-slim", "gpus": 1}
    env = environment_from_dict({**base, "gpu_sharing": "shared", "gpu_kernels_per_device": 3})
    assert (env.gpu_sharing, env.gpu_kernels_per_device) == ("shared", 3)
    again = environment_from_dict(env.to_config())
    assert (again.gpu_sharing, again.gpu_kernels_per_device) == ("shared", 3)
    assert environment_from_dict(base).gpu_sharing == "exclusive"
    with pytest.raises(CatalogError, match="gpu_kernels_per_device"):
        environment_from_dict({**base, "gpu_kernels_per_device": 2})
    with pytest.raises(CatalogError, match="gpu_sharing"):
        environment_from_dict({**base, "gpus": "all", "gpu_sharing": "shared"})
    with pytest.raises(CatalogError, match="gpu_sharing"):
        environment_from_dict({**base, "gpu_sharing": "sometimes"})


def test_a_restart_may_name_the_devices_it_held() -> None:
    from jupyter_tfenv.broker import policy

    body = {"kernel_id": "k" * 12, "environment": "gpu1", "cwd": "/home/a", "env": {}}
    assert policy.validate_start_body(body, []).gpu_devices == ()
    with_ids = {**body, "gpu_devices": ["2", "GPU-0f3c", "MIG-1/2"]}
    assert policy.validate_start_body(with_ids, []).gpu_devices == ("2", "GPU-0f3c", "MIG-1/2")
    for bad in ("2", ["../x"], [2], ["a b"]):
        with pytest.raises(policy.BrokerError, match="'gpu_devices'"):
            policy.validate_start_body({**body, "gpu_devices": bad}, [])


class _NvmlFacts:
    """NVML-shaped facts of one GPU in MIG mode with two instances (and one slot empty),
    through pynvml's function names; errors are pynvml's own."""

    def __init__(self, mig: bool) -> None:
        import pynvml

        self.mig = mig
        self.NVMLError = pynvml.NVMLError
        self._not_found = pynvml.NVML_ERROR_NOT_FOUND

    def nvmlDeviceGetMigMode(self, handle: str) -> list[int]:
        return [1, 1] if self.mig else [0, 0]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: str) -> int:
        return 3

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: str, index: int) -> str:
        if index == 1:
            raise self.NVMLError(self._not_found)
        return f"{handle}/mig{index}"

    def nvmlDeviceGetUUID(self, handle: str) -> bytes:
        return f"MIG-{handle}".encode()

    def nvmlDeviceGetName(self, handle: str) -> str:
        return "NVIDIA A100 1g.10gb"

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> Any:
        return type("Memory", (), {"total": 10 * 1024**3})()


def test_mig_instances_are_read_from_nvml() -> None:
    pytest.importorskip("pynvml")
    from jupyter_tfenv.backends.docker import gpu

    found = gpu._mig_devices(_NvmlFacts(mig=True), "gpu0")
    assert found == [
        {"uuid": "MIG-gpu0/mig0", "name": "NVIDIA A100 1g.10gb", "memory_total": 10 * 1024**3},
        {"uuid": "MIG-gpu0/mig2", "name": "NVIDIA A100 1g.10gb", "memory_total": 10 * 1024**3},
    ]
    assert gpu._mig_devices(_NvmlFacts(mig=False), "gpu0") == []
    overview = {"state": "ok", "gpus": [{"index": 0, "uuid": "GPU-0", "mig_devices": found}]}
    assert [d.id for d in inventory_from_nvml(overview)] == ["MIG-gpu0/mig0", "MIG-gpu0/mig2"]
