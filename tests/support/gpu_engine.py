"""A second Docker engine of a test's own; :class:`GpuEngine`: one whose NVIDIA device
driver is real.

:class:`TestEngine` runs a dockerd beside the main test engine (own data root, exec root,
socket, pidfile and containerd namespace; no bridge, no iptables) that a test may stop
(SIGTERM, as a daemon upgrade does) and start again on the same data root: an engine
outage without touching the main engine. ``live_restore``: containers outlive the stop.

Docker registers its built-in ``nvidia`` device driver when an executable named
``nvidia-container-runtime-hook`` is on dockerd's PATH at start (../shared/design/TESTING.md,
"GPUs without a GPU"). A stand-in hook that reads the OCI state and exits 0 makes GPU
device requests work without a GPU: Docker writes ``NVIDIA_VISIBLE_DEVICES`` (the devices
it was asked for, the value the real hook acts on) into the container's process
environment. :class:`GpuEngine` runs such a dockerd beside the main test engine (own data
root, exec root, socket and pidfile; no bridge, no iptables), loads the one small test
image it needs from the main engine, and removes everything when it stops.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import docker

HOOK = "#!/bin/sh\n# tfenv tests' stand-in for the NVIDIA hook\ncat >/dev/null\nexit 0\n"


class TestEngine:
    """``start()`` a dockerd of the test's own; ``stop_daemon()`` it (the data root stays,
    ``start()`` again resumes it); ``stop()`` it and remove its containers and folders."""

    __test__ = False  # not a pytest test class
    gpu_hook = False
    namespace = "tfenv-test-engine"
    prefix = "tfeng-"

    def __init__(self, *, live_restore: bool = False) -> None:
        self.live_restore = live_restore
        # Short: the socket path and the containerd sockets under exec-root.
        self.root = Path(tempfile.mkdtemp(prefix=self.prefix, dir="/tmp"))
        self.socket = self.root / "d.sock"
        self.pidfile = self.root / "d.pid"
        self.log_path = self.root / "dockerd.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.client: docker.DockerClient | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 120.0) -> docker.DockerClient:
        env = dict(os.environ)
        if self.gpu_hook:
            bin_dir = self.root / "bin"
            bin_dir.mkdir(exist_ok=True)
            hook = bin_dir / "nvidia-container-runtime-hook"
            hook.write_text(HOOK)
            hook.chmod(0o755)
            env["PATH"] = f"{bin_dir}:{os.environ.get('PATH', '')}"
        env.pop("DOCKER_HOST", None)
        extra = ["--live-restore"] if self.live_restore else []
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    shutil.which("dockerd") or "dockerd",
                    "--data-root",
                    str(self.root / "data"),
                    "--exec-root",
                    str(self.root / "exec"),
                    "-H",
                    self.url,
                    "--pidfile",
                    str(self.pidfile),
                    "--bridge=none",
                    "--iptables=false",
                    "--ip6tables=false",
                    # Its own containerd: a second dockerd must not share the main one's.
                    "--containerd-namespace",
                    self.namespace,
                    "--containerd-plugins-namespace",
                    f"{self.namespace}-plugins",
                    *extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                client = docker.DockerClient(base_url=self.url, timeout=120)
                client.ping()
                break
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    message = f"the test dockerd did not start: {self.log()}"
                    raise RuntimeError(message) from None
                time.sleep(0.5)
        self.client = client
        return client

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def load_image(self, main: docker.DockerClient, reference: str) -> None:
        """``docker save reference | docker load`` from the main engine into this one."""
        assert self.client is not None
        image = main.images.get(reference)
        # Saved under ``reference`` itself: ``named=True`` takes the image's first tag,
        # which may be another name a test gave the same image.
        named = reference if reference in image.tags else True
        self.client.images.load(b"".join(image.save(named=named)))

    def containers(self) -> list[Any]:
        assert self.client is not None
        return list(self.client.containers.list(all=True))

    def stop_daemon(self) -> None:
        """SIGTERM the dockerd and wait for it to exit, as ``systemctl stop docker`` does;
        its data root stays (with ``live_restore`` its containers keep running)."""
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
            self.client = None
        self._terminate()

    def _terminate(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=30)
            self.process = None

    def stop(self) -> None:
        if self.client is None and self.process is None and self.live_restore:
            # Stopped with containers left running: start it once more to remove them.
            with contextlib.suppress(Exception):
                self.start()
        if self.client is not None:
            with contextlib.suppress(Exception):
                for container in self.client.containers.list(all=True):
                    container.remove(force=True)
            with contextlib.suppress(Exception):
                self.client.close()
            self.client = None
        self._terminate()
        # dockerd leaves its overlay and shm mounts only when killed; detach what is left.
        points: list[str] = []
        with contextlib.suppress(OSError), open("/proc/self/mountinfo", encoding="utf-8") as f:
            points = [line.split()[4] for line in f]
        ours = [p for p in points if p.startswith(str(self.root) + "/")]
        for point in sorted(ours, reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


class GpuEngine(TestEngine):
    """A :class:`TestEngine` with the stand-in NVIDIA hook on its PATH."""

    gpu_hook = True
    namespace = "tfenv-gpu-test"
    prefix = "tfgpu-"


def visible_devices(client: docker.DockerClient, container_id: str) -> str:
    """``NVIDIA_VISIBLE_DEVICES`` of a container's init process, read from the host's /proc:
    Docker puts it in the OCI process environment, not in ``Config.Env``."""
    pid = int(client.api.inspect_container(container_id)["State"]["Pid"])
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    for item in raw.split(b"\0"):
        if item.startswith(b"NVIDIA_VISIBLE_DEVICES="):
            return item.split(b"=", 1)[1].decode()
    return ""
