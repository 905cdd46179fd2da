"""Pure parts of "why a brokered kernel was restarted": which pod states are the cluster's
doing (backends/kubernetes/podstatus.py ``cluster_ending``), the ``last_restart`` record
and message built from them, and which broker answers mean "its engine is away"
(provisioning/brokered_deaths.py)."""

from __future__ import annotations

from typing import Any

import pytest

from jupyter_tfenv.backends.broker import BrokerError, BrokerUnavailableError
from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.backends.kubernetes.podstatus import cluster_ending, pod_state
from jupyter_tfenv.provisioning.brokered_deaths import (
    POD_ENDINGS,
    engine_away,
    pod_restart_record,
)

LOW_MEMORY = "The node was low on resource: memory."


def pod(
    status: dict[str, Any] | None = None,
    terminated: dict[str, Any] | None = None,
    **meta: Any,
) -> dict[str, Any]:
    state = {"terminated": terminated} if terminated else {"running": {}}
    return {
        "metadata": {"name": "tfenv-kernel-ada-1", **meta},
        "status": {
            "phase": "Running",
            **(status or {}),
            "containerStatuses": [{"name": m.KERNEL_CONTAINER, "state": state}],
        },
    }


def test_an_evicted_pod_is_the_clusters_doing() -> None:
    evicted = pod(
        {"phase": "Failed", "reason": "Evicted", "message": LOW_MEMORY},
        {"exitCode": 137, "reason": "Error", "finishedAt": "2026-12-07T10:11:12Z"},
    )
    assert cluster_ending(evicted) == {
        "reason": "pod-evicted",
        "cause": "Evicted",
        "detail": LOW_MEMORY,
        "at": "2026-12-07T10:11:12Z",
    }
    # The broker's answer carries it (and still says how the container ended).
    state = pod_state(evicted)
    assert state.ended_by == cluster_ending(evicted)
    assert state.running is False and state.exit_code == 137


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("Preempting", "pod-preempted"),
        ("NodeLost", "node-lost"),
        ("Terminated", "node-lost"),  # graceful node shutdown
    ],
)
def test_pod_reasons_of_the_cluster(reason: str, expected: str) -> None:
    ending = cluster_ending(pod({"phase": "Failed", "reason": reason}))
    assert ending is not None and ending["reason"] == expected and ending["cause"] == reason


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        ("PreemptionByScheduler", "pod-preempted"),
        ("EvictionByEvictionAPI", "pod-evicted"),
        ("TerminationByKubelet", "pod-evicted"),
        ("DeletionByTaintManager", "node-lost"),
        ("DeletionByPodGC", "node-lost"),
        ("SomethingNew", "pod-deleted"),
    ],
)
def test_disruption_target_conditions(cause: str, expected: str) -> None:
    cond = {
        "type": "DisruptionTarget",
        "status": "True",
        "reason": cause,
        "message": "why",
        "lastTransitionTime": "2026-12-07T10:00:00Z",
    }
    ending = cluster_ending(pod({"conditions": [cond]}))
    assert ending == {
        "reason": expected,
        "cause": cause,
        "detail": "why",
        "at": "2026-12-07T10:00:00Z",
    }
    # A condition that is not true says nothing.
    assert cluster_ending(pod({"conditions": [{**cond, "status": "False"}]})) is None


def test_a_pod_being_deleted_is_the_clusters_doing() -> None:
    ending = cluster_ending(pod(deletionTimestamp="2026-12-07T10:00:05Z"))
    assert ending == {
        "reason": "pod-deleted",
        "cause": "Deleted",
        "detail": "",
        "at": "2026-12-07T10:00:05Z",
    }


@pytest.mark.parametrize(
    "ended_by_itself",
    [
        pod({"phase": "Failed"}, {"exitCode": 1, "reason": "Error"}),
        pod({"phase": "Succeeded"}, {"exitCode": 0, "reason": "Completed"}),
        pod({"phase": "Failed"}, {"exitCode": 137, "reason": "OOMKilled"}),
        pod(),  # running
        pod({"phase": "Pending", "reason": "", "conditions": [{"type": "PodScheduled"}]}),
    ],
)
def test_a_kernel_that_ended_by_itself_is_not(ended_by_itself: dict[str, Any]) -> None:
    assert cluster_ending(ended_by_itself) is None
    assert pod_state(ended_by_itself).ended_by is None


def test_the_record_says_what_happened_and_what_is_kept() -> None:
    record = pod_restart_record(
        {
            "reason": "pod-evicted",
            "cause": "Evicted",
            "detail": LOW_MEMORY,
            "at": "2026-12-07T10:11:12Z",
        }
    )
    assert record["reason"] == "pod-evicted"
    assert record["at"] == "2026-12-07T10:11:12+00:00"
    message = record["message"]
    assert message.startswith("The Kubernetes cluster evicted the kernel's pod at "), message
    for words in (
        f"(Evicted: {LOW_MEMORY})",
        "the kernel was restarted in a new pod",
        "variables are lost",
        "checkpoints on its checkpoint claim ($TFENV_CHECKPOINT_DIR) are kept",
    ):
        assert words in message, (words, message)


def test_every_reason_has_its_words_and_unknown_ones_are_a_deletion() -> None:
    for reason, words in POD_ENDINGS.items():
        assert words in pod_restart_record({"reason": reason})["message"]
    odd = pod_restart_record({"reason": "meteor", "at": "not a time"}, now=0.0)
    assert odd["reason"] == "pod-deleted"
    assert odd["at"] == "1970-01-01T00:00:00+00:00"  # unknown time: when it was seen
    # No cause and no detail: no empty brackets.
    assert "()" not in odd["message"] and "( " not in odd["message"]


def test_which_broker_answers_mean_its_engine_is_away() -> None:
    away = BrokerError(
        "Cannot reach the Docker engine at unix:///var/run/docker.sock: …", status=503
    )
    assert engine_away(away)
    assert not engine_away(BrokerUnavailableError("the broker does not answer (Docker engine)"))
    assert not engine_away(BrokerError("Docker engine said no", status=500))
    assert not engine_away(BrokerError("Too many kernels", status=503))


def runner_state(pod: bool) -> Any:
    """The provisioner fields BrokeredDeaths reads and sets (a plain stand-in)."""
    import logging
    from types import SimpleNamespace

    return SimpleNamespace(
        _pod={"ports": {}} if pod else None,
        _engine_death=None,
        last_restart=None,
        kernel_id="k1",
        log=logging.getLogger("test"),
    )


def test_what_the_polls_learn_is_told_once_at_the_restart() -> None:
    from jupyter_tfenv.provisioning.brokered_deaths import BrokeredDeaths

    prov = runner_state(pod=True)
    deaths = BrokeredDeaths(prov, client=None)  # type: ignore[arg-type]
    # A pod being deleted is seen while it still runs; it is gone at the next poll.
    deaths.seen({"running": True, "ended_by": {"reason": "node-lost", "cause": "NodeLost"}})
    deaths.gone()
    deaths.started()
    assert prov.last_restart["reason"] == "node-lost", prov.last_restart
    first = prov.last_restart
    deaths.started()  # the next start (a user's restart) says nothing new
    assert prov.last_restart is first
    # This server's own shutdown or restart deletes the pod: no news.
    prov.last_restart = None
    deaths.stopping()
    deaths.gone()
    deaths.started()
    assert prov.last_restart is None


def test_a_docker_kernel_takes_the_brokers_engine_death() -> None:
    from jupyter_tfenv.provisioning.brokered_deaths import BrokeredDeaths

    prov = runner_state(pod=False)
    deaths = BrokeredDeaths(prov, client=None)  # type: ignore[arg-type]
    deaths.dead({"running": False, "exit_code": 255, "engine_death": "2026-12-07T10:11:12+00:00"})
    assert prov._engine_death is not None and prov._engine_death.isoformat().startswith(
        "2026-12-07T10:11:12"
    )
    away = BrokerError("Cannot reach the Docker engine at unix:///x", status=503)
    assert deaths.unsignalled(away)  # the restart's interrupt: no error
    other = runner_state(pod=False)
    alive = BrokeredDeaths(other, client=None)  # type: ignore[arg-type]
    assert not alive.unsignalled(away)  # a user's interrupt of a live kernel: the 503
    alive.dead({"running": False, "exit_code": 1, "engine_death": None})
    assert other._engine_death is None and alive.unsignalled(away)
