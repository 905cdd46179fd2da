"""An API server that accepts a connection and never answers (overloaded, or gone without
closing it) gets each request of the broker's Kubernetes client a timeout: the call fails
with the backend's 'does not answer' error instead of holding a thread for ever (a pytest
process once hung at exit on such a thread, joined by concurrent.futures)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from jupyter_tfenv.backends.kubernetes import api as k8s_api

pytest.importorskip("kubernetes")


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback server that accepts connections, reads, and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


async def test_a_silent_api_server_is_an_error_not_a_hang(
    silent_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes import client

    monkeypatch.setattr(k8s_api, "REQUEST_TIMEOUT", (1.0, 1.0))
    configuration = client.Configuration()
    configuration.host = silent_server
    configuration.retries = 0
    api = k8s_api.KubernetesAPI(client.ApiClient(configuration), "tfenv-kernels")
    with pytest.raises(k8s_api.KubernetesUnavailableError) as err:
        await api._call(api.core.read_namespaced_pod, "tfenv-kernel-x", "tfenv-kernels")
    assert "does not answer" in err.value.message
    assert "timed out" in err.value.message.lower()
