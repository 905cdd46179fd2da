"""Every kernel start failure, triggered for real, says what is wrong and what to do."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from tests.conftest import kernel_containers, run_code, start_error, start_kernel

pytestmark = pytest.mark.docker


async def assert_nothing_left(docker_engine, jp_serverapp, runtime_root):
    assert kernel_containers(docker_engine) == []
    assert jp_serverapp.kernel_manager.list_kernel_ids() == []
    assert list(Path(runtime_root).iterdir()) == [] or all(
        not any(p.is_socket() for p in d.iterdir()) for d in Path(runtime_root).iterdir()
    )


async def test_image_not_present(jp_fetch, jp_serverapp, docker_engine, runtime_root):
    code, message = await start_error(jp_fetch, "tfenv-missing")
    assert code == 400
    assert "tfenv-test/not-built:9.9.9" in message
    assert "is not on this Docker engine" in message
    assert "jupyter tfenv pull missing" in message
    await assert_nothing_left(docker_engine, jp_serverapp, runtime_root)


async def test_image_without_python(jp_fetch, jp_serverapp, docker_engine, runtime_root):
    code, message = await start_error(jp_fetch, "tfenv-nopython")
    assert code == 400
    assert "has no 'python3'" in message
    assert "Set 'python' in the catalog entry" in message
    await assert_nothing_left(docker_engine, jp_serverapp, runtime_root)


async def test_image_without_ipykernel_and_no_runtime(
    jp_fetch, jp_serverapp, docker_engine, runtime_root, tmp_path
):
    jp_serverapp.config.DockerKernelProvisioner.runtimes_dir = str(tmp_path / "no-runtimes")
    code, message = await start_error(jp_fetch, "tfenv-py-nokernel")
    assert code == 400
    assert "has no ipykernel for its Python 3.11" in message
    assert "jupyter tfenv runtime build --python 3.11" in message
    await assert_nothing_left(docker_engine, jp_serverapp, runtime_root)


async def test_image_without_ipykernel_runs_with_the_mounted_runtime(
    jp_fetch, jp_serverapp, docker_engine, kernel_runtimes
):
    """The stock image is not changed: ipykernel comes from a read-only mounted runtime."""
    image = docker_engine.images.get("tfenv-test/python:3.11")
    kernel_id = await start_kernel(jp_fetch, "tfenv-py-nokernel")
    try:
        out = await run_code(
            jp_serverapp, kernel_id, "import ipykernel, sys; print(ipykernel.__file__)"
        )
        assert out.strip().startswith("/opt/tfenv/runtimes/cp311-")
        (container,) = kernel_containers(docker_engine, kernel_id)
        mount = next(
            m for m in container.attrs["Mounts"] if m["Destination"] == "/opt/tfenv/runtimes"
        )
        assert mount["RW"] is False
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert docker_engine.images.get("tfenv-test/python:3.11").id == image.id


@pytest.mark.slow
async def test_plain_tensorflow_image_runs_with_the_mounted_runtime(
    jp_fetch, jp_serverapp, docker_engine
):
    kernel_id = await start_kernel(jp_fetch, "tfenv-tf220-nokernel")
    try:
        out = await run_code(
            jp_serverapp, kernel_id, "import tensorflow as tf; print(tf.__version__)"
        )
        assert out.strip() == "2.20.0"
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")


async def test_gpu_requested_on_an_engine_without_nvidia_runtime(
    jp_fetch, jp_serverapp, docker_engine, runtime_root
):
    if "nvidia" in docker_engine.info().get("Runtimes", {}):
        pytest.skip("this engine has the NVIDIA runtime; the no-GPU path cannot be shown here")
    code, message = await start_error(jp_fetch, "tfenv-gpu")
    assert code == 500
    assert "asks for GPUs (all GPUs)" in message
    assert "no NVIDIA runtime" in message
    assert "NVIDIA Container Toolkit" in message and "pick a CPU environment" in message
    await assert_nothing_left(docker_engine, jp_serverapp, runtime_root)


async def test_a_refused_start_is_logged_in_one_line(
    jp_fetch, jp_serverapp, docker_engine, runtime_root
):
    """A refusal the server explains is one warning in its log, not two tracebacks."""
    if "nvidia" in docker_engine.info().get("Runtimes", {}):
        pytest.skip("this engine has the NVIDIA runtime; the no-GPU path cannot be shown here")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    jp_serverapp.log.addHandler(handler)
    try:
        _, message = await start_error(jp_fetch, "tfenv-gpu")
    finally:
        jp_serverapp.log.removeHandler(handler)
    assert "no NVIDIA runtime" in message
    logged = [r for r in records if message in r.getMessage()]
    print("\n".join(f"{r.levelname}: {r.getMessage()}" for r in logged))
    refusals = [r for r in logged if r.getMessage().startswith("tfenv: kernel not started: ")]
    assert len(refusals) == 1, logged
    assert refusals[0].levelno == logging.WARNING
    assert all(r.exc_info is None for r in records), [r.getMessage() for r in records]
    assert all(r.levelno < logging.ERROR for r in logged), logged
    await assert_nothing_left(docker_engine, jp_serverapp, runtime_root)


async def test_container_exits_at_start_shows_its_log(
    jp_fetch, jp_serverapp, docker_engine, runtime_root
):
    # /bin/sh cannot run the launcher (a Python file): the container exits at once.
    code, message = await start_error(jp_fetch, "tfenv-exits")
    assert code == 500
    assert "exited with code 2 while starting" in message
    assert "Last lines of the container's log:" in message
    assert "/opt/tfenv/launch.py" in message  # sh's own complaint, from the container
    await assert_nothing_left(docker_engine, jp_serverapp, runtime_root)


async def test_container_removed_while_the_kernel_starts(
    jp_fetch, jp_serverapp, docker_engine, runtime_root
):
    # Someone else (`docker rm -f`, a clean-up job) removes the container before the kernel
    # answers: the start fails with what happened, not a 500 (it was a 500 in broker mode).
    starting = asyncio.ensure_future(start_error(jp_fetch, "tfenv-tf220"))
    found: list = []
    for _ in range(1200):
        found = await asyncio.to_thread(kernel_containers, docker_engine)
        if found or starting.done():
            break
        await asyncio.sleep(0.05)
    assert found, "the kernel's container never appeared"
    await asyncio.to_thread(found[0].remove, force=True)
    code, message = await starting
    assert code == 409, message
    assert "while the kernel started, by something other than" in message
    assert "Start the kernel again" in message
    await assert_nothing_left(docker_engine, jp_serverapp, runtime_root)


async def test_start_timeout(jp_fetch, jp_serverapp, docker_engine, runtime_root):
    jp_serverapp.config.DockerKernelProvisioner.start_timeout = 0.01
    code, message = await start_error(jp_fetch, "tfenv-py")
    assert code == 504  # the kernel did not answer in time: not a server fault (500)
    assert "did not start within 0 s" in message
    assert "c.DockerKernelProvisioner.start_timeout" in message
    await assert_nothing_left(docker_engine, jp_serverapp, runtime_root)


async def test_root_kernels_are_refused(jp_fetch, jp_serverapp, docker_engine, runtime_root):
    jp_serverapp.config.DockerKernelProvisioner.uid = 0
    code, message = await start_error(jp_fetch, "tfenv-py")
    assert code == 400
    assert "Refusing to run the kernel as root (uid 0)" in message
    await assert_nothing_left(docker_engine, jp_serverapp, runtime_root)


async def test_docker_daemon_not_reachable(
    jp_fetch, jp_serverapp, docker_engine, runtime_root, monkeypatch, tmp_path
):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    code, message = await start_error(jp_fetch, "tfenv-py")
    assert code == 503
    assert f"Cannot reach the Docker engine at unix://{tmp_path}/no-docker.sock" in message
    assert "Start the Docker engine" in message
    monkeypatch.delenv("DOCKER_HOST")
    await assert_nothing_left(docker_engine, jp_serverapp, runtime_root)


async def test_unknown_tfenv_kernel_name(jp_fetch, jp_serverapp):
    """A tfenv kernel name no catalog entry has (removed, or left out as invalid, as the
    floating tag here): 404 with the catalog's words, not jupyter_server's 500
    "Unhandled error"."""
    code, message = await start_error(jp_fetch, "tfenv-floating")
    assert code == 404, message
    assert message.startswith("No kernel 'tfenv-floating': No environment 'floating'"), message
    assert "jupyter tfenv check" in message, message
    code, message = await start_error(jp_fetch, "tfenv-never-there")
    assert code == 404 and "No environment 'never-there' in the tfenv catalog" in message
    # Still jupyter_client's NoSuchKernel for whoever asks the spec manager.
    from jupyter_client.kernelspec import NoSuchKernel

    with pytest.raises(NoSuchKernel):
        jp_serverapp.kernel_spec_manager.get_kernel_spec("tfenv-never-there")


async def test_a_failed_start_does_not_block_server_shutdown(jp_fetch, jp_serverapp):
    """jupyter_client keeps a failed start's id as pending; shutting down must not trip on it."""
    kernel_id = await start_kernel(jp_fetch, "tfenv-py")
    await start_error(jp_fetch, "tfenv-missing")  # fails in launch
    jp_serverapp.config.DockerKernelProvisioner.uid = 0
    await start_error(jp_fetch, "tfenv-py")  # fails in pre-launch
    await jp_serverapp.kernel_manager.shutdown_all()
    assert kernel_id not in jp_serverapp.kernel_manager.list_kernel_ids()
