"""The 503 a person reads when the Docker engine cannot be asked (issue 24): which engine,
what failed in words, what to do; never the raw Python exception (that goes to the log).

The exceptions are built as the Docker SDK, requests and urllib3 raise them (the chains
were read off real failures), and a few are real: a client pointed at a socket that does
not exist, one nobody listens on, one that never answers.
"""

from __future__ import annotations

import http.client
import logging
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests
import urllib3
from docker.errors import DockerException

from jupyter_tfenv.errors import (
    DockerUnavailableError,
    as_tfenv_error,
    engine_unreachable,
    unreachable_error,
)

HOST = "unix:///var/run/docker.sock"
RAW = ("Errno", "Error(", "Connection aborted.", "HTTPConnection", "Max retries")


def sdk_wrapped(os_error: BaseException) -> requests.exceptions.ConnectionError:
    """What requests raises when the unix socket fails: ConnectionError(ProtocolError)."""
    protocol = urllib3.exceptions.ProtocolError("Connection aborted.", os_error)
    err = requests.exceptions.ConnectionError(protocol)
    err.__context__ = protocol
    return err


def version_fetch(err: BaseException) -> DockerException:
    """What ``docker.from_env()`` raises when its first call (the API version) fails."""
    try:
        try:
            raise err
        except Exception as inner:
            raise DockerException(f"Error while fetching server API version: {inner}") from inner
    except DockerException as outer:
        return outer


def tcp_refused() -> requests.exceptions.ConnectionError:
    refused = ConnectionRefusedError(111, "Connection refused")
    new = urllib3.exceptions.NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused"
    )
    new.__cause__ = refused
    retry = urllib3.exceptions.MaxRetryError(None, "/v1.41/_ping", new)  # type: ignore[arg-type]
    return requests.exceptions.ConnectionError(retry)


def message(err: BaseException) -> str:
    assert engine_unreachable(err)
    answer = as_tfenv_error(err)
    assert isinstance(answer, DockerUnavailableError) and answer.http_status == 503
    return unreachable_error(err, HOST).message


def assert_readable(text: str) -> None:
    assert text.startswith(f"Cannot reach the Docker engine at {HOST}: "), text
    for raw in RAW:
        assert raw not in text, (raw, text)


@pytest.mark.parametrize(
    ("err", "words"),
    [
        (
            sdk_wrapped(FileNotFoundError(2, "No such file or directory")),
            "the socket does not exist (is dockerd running?)",
        ),
        (
            version_fetch(sdk_wrapped(FileNotFoundError(2, "No such file or directory"))),
            "the socket does not exist (is dockerd running?)",
        ),
        (
            sdk_wrapped(ConnectionRefusedError(111, "Connection refused")),
            "connection refused (is dockerd running?)",
        ),
        (tcp_refused(), "connection refused (is dockerd running?)"),
        (
            version_fetch(sdk_wrapped(ConnectionResetError(104, "Connection reset by peer"))),
            "it closed the connection (is it restarting?)",
        ),
        (
            sdk_wrapped(http.client.RemoteDisconnected("Remote end closed connection")),
            "it closed the connection (is it restarting?)",
        ),
        (
            requests.exceptions.ReadTimeout(
                urllib3.exceptions.ReadTimeoutError(None, "/v1.41/containers/json", "timed out")  # type: ignore[arg-type]
            ),
            "it stopped answering (no reply in time)",
        ),
        (
            requests.exceptions.ConnectTimeout("HTTPConnectionPool: Connect timed out"),
            "it did not accept the connection in time",
        ),
        (
            requests.exceptions.ConnectionError(socket.gaierror(-2, "Name or service not known")),
            "its host name does not resolve",
        ),
    ],
)
def test_each_cause_in_words(err: BaseException, words: str) -> None:
    text = message(err)
    assert_readable(text)
    assert f": {words}. " in text, text
    assert "systemctl start docker" in text  # what to do
    assert "Running kernels are not stopped" in text


def test_permission_denied_says_what_to_do_about_the_socket() -> None:
    text = message(version_fetch(sdk_wrapped(PermissionError(13, "Permission denied"))))
    assert_readable(text)
    assert ": permission denied (is this user in the docker group?). " in text
    assert "'docker' group" in text and "tfenv broker" in text


def test_a_message_passed_on_as_text_still_says_what_failed() -> None:
    # The chain is gone (a remote error's text); its words are read.
    err = DockerException(
        "Error while fetching server API version: ('Connection aborted.', "
        "FileNotFoundError(2, 'No such file or directory'))"
    )
    text = message(err)
    assert ": the socket does not exist (is dockerd running?). " in text
    assert_readable(text)


def test_the_raw_detail_goes_to_the_log_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    err = sdk_wrapped(FileNotFoundError(2, "No such file or directory"))
    with caplog.at_level(logging.DEBUG, logger="jupyter_tfenv"):
        unreachable_error(err, HOST)
    (record,) = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert record.levelno == logging.DEBUG
    assert "FileNotFoundError(2, 'No such file or directory')" in record.getMessage()


def test_an_error_already_in_words_is_kept() -> None:
    err = DockerUnavailableError("Cannot reach the Docker engine at x: y. z")
    assert unreachable_error(err) is err


def test_the_host_defaults_to_docker_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")
    text = unreachable_error(sdk_wrapped(ConnectionRefusedError(111, "refused"))).message
    assert text.startswith("Cannot reach the Docker engine at unix:///run/user/1000/docker.sock: ")


# Real failures of the Docker SDK (no engine needed: sockets of the test's own).


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tfe-", dir="/tmp") as name:
        yield Path(name)


def real_error(url: str, timeout: int = 5) -> BaseException:
    with pytest.raises(Exception) as info:
        docker.DockerClient(base_url=url, timeout=timeout).ping()
    return info.value


def test_real_missing_socket(short_dir: Path) -> None:
    url = f"unix://{short_dir}/none.sock"
    text = unreachable_error(real_error(url), url).message
    assert text.startswith(f"Cannot reach the Docker engine at {url}: the socket does not exist")


def test_real_socket_nobody_listens_on(short_dir: Path) -> None:
    path = short_dir / "stale.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()  # the file stays, as after a dockerd that was killed
    url = f"unix://{path}"
    text = unreachable_error(real_error(url), url).message
    assert f"{url}: connection refused (is dockerd running?). " in text


def test_real_engine_that_stops_answering(short_dir: Path) -> None:
    path = short_dir / "hang.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.listen(4)
    try:
        url = f"unix://{path}"
        text = unreachable_error(real_error(url, timeout=1), url).message
        assert f"{url}: it stopped answering (no reply in time). " in text
    finally:
        sock.close()


def test_real_engine_that_closes_the_connection(short_dir: Path) -> None:
    path = short_dir / "close.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.listen(4)

    def hang_up() -> None:
        conn, _ = sock.accept()
        conn.recv(1024)
        conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        url = f"unix://{path}"
        text = unreachable_error(real_error(url), url).message
        assert f"{url}: it closed the connection (is it restarting?). " in text
    finally:
        thread.join(timeout=10)
        sock.close()
