"""GPUs shared between two hub users, through the real hub (issue 20, item 1).

What JupyterLab does, with each user's own token: ``POST /user/<name>/api/kernels``,
restarts and shutdowns on that user's single-user server, and ``GET /user/<name>/tfenv/gpus``
(what the panel's GPU section shows). The servers start kernels through a real tfenv
broker whose Docker engine has a working NVIDIA device driver: a dockerd of this module's
own with a stand-in ``nvidia-container-runtime-hook`` (tests/support/gpu_engine.py,
../shared/design/TESTING.md "GPUs without a GPU") and 4 stand-in devices (the broker's
``gpu_devices``). What a kernel got is what Docker put into ``NVIDIA_VISIBLE_DEVICES``,
the value the real hook acts on: read inside the kernel and from its container's init
process on the host.

That broker is the hub's ``tfenv-broker-gpu`` service (declared by tests/hub/harness.py as
an external service; started here with the token and URL the hub knows), so the users'
servers reach it with their hub tokens exactly as they reach the example's broker. For
this module only, alice's and bob's servers are pointed at it and see two more catalog
entries (``--DockerKernelProvisioner.broker_url``, ``--TFEnvCatalog.catalog_files``);
afterwards they run with the example config's arguments again. The hub's own broker
keeps the main engine, which has no NVIDIA runtime.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.conftest import PY_IMAGE
from tests.support.gpu_engine import GpuEngine, visible_devices
from tests.ui.conftest import (  # noqa: F401 - fixtures: Chromium, and no asyncio loop
    DEFAULT_TIMEOUT_MS,
    browser,
    chromium,
    jp_asyncio_loop,
    jp_server_cleanup,
    screenshot_dir,
)
from tests.ui.helpers import (
    KERNEL_TIMEOUT_MS,
    STDOUT,
    cell_output,
    new_notebook,
    run_cell,
    wait_kernel_idle,
)
from tests.ui.lab import chromium_executable
from tests.ui.test_panel import PANEL, open_panel_by_tab

from .harness import ALICE, BOB, GPU_BROKER_SERVICE, KERNEL_LABEL, HubHarness
from .test_hub_lab import login, quiet_news

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(shutil.which("dockerd") is None, reason="dockerd is not installed"),
]

DEVICES = ["0", "1", "2", "3"]
GPU1_NAME = "1 GPU (test)"
GPU_ENVS: list[dict[str, Any]] = [
    {"id": "gpu1", "image": PY_IMAGE, "gpus": 1, "display_name": GPU1_NAME},
    {
        "id": "gpu1-shared",
        "image": PY_IMAGE,
        "gpus": 1,
        "gpu_sharing": "shared",
        "gpu_kernels_per_device": 2,
        "display_name": "1 shared GPU (test)",
    },
]
DEVICES_CODE = "import os; print(os.environ.get('NVIDIA_VISIBLE_DEVICES', '<unset>'))"
HOLDERS = f"{PANEL} .jp-tfenv-gpu-holders li"


def message_of(response: requests.Response) -> str:
    try:
        return str(response.json().get("message") or "")
    except ValueError:
        return ""


class GpuBrokerService:
    """``python -m jupyter_tfenv.broker`` as the hub's ``tfenv-broker-gpu`` service: the
    environment JupyterHub gives a managed service (its token, the hub's API, its name,
    URL and prefix), ``DOCKER_HOST`` at the GPU engine, the GPU catalog, 4 devices.
    Folders as the example's broker has them (checkpoints and logs shared with it), its
    own runtime root (each broker sweeps the folders no container of its engine names)."""

    def __init__(self, hub: HubHarness, engine: GpuEngine) -> None:
        assert hub.paths is not None
        self.hub = hub
        self.url = f"http://127.0.0.1:{hub.gpu_broker_port}"
        # Readable by the users' servers (their kernel picker shows these entries).
        self.catalog = hub.workdir / "tfenv-gpu-catalog.yaml"
        self.catalog.write_text(yaml.safe_dump({"version": 1, "environments": GPU_ENVS}))
        self.catalog.chmod(0o644)
        runtime_root = Path(tempfile.mkdtemp(prefix="tfg-", dir="/run"))  # short: sockets
        runtime_root.rmdir()  # the broker makes it, with its own modes
        self.runtime_root = runtime_root
        self.probes = Path(tempfile.mkdtemp(prefix="tfenv-gpu-probes-"))
        self.log_path = hub.workdir / "tfenv-broker-gpu.log"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("JUPYTER", "JPY_", "TFENV_", "DOCKER_"))
        }
        env.update(
            {
                "JUPYTERHUB_API_TOKEN": hub.gpu_broker_token,
                "JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub.hub_port}/hub/api",
                "JUPYTERHUB_SERVICE_NAME": GPU_BROKER_SERVICE,
                "JUPYTERHUB_SERVICE_URL": self.url,
                "JUPYTERHUB_SERVICE_PREFIX": f"/services/{GPU_BROKER_SERVICE}/",
                "JUPYTER_TFENV_CATALOG": str(self.catalog),
                "DOCKER_HOST": engine.url,
            }
        )
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "jupyter_tfenv.broker",
                    f"--TFEnvBroker.runtime_root={runtime_root}",
                    f"--TFEnvBroker.checkpoint_root={hub.paths.checkpoint_root}",
                    f"--TFEnvBroker.log_root={hub.paths.log_root}",
                    f"--TFEnvBroker.probe_cache_dir={self.probes}",
                    f"--TFEnvBroker.gpu_devices={DEVICES!r}",
                    # Eight kernels of two users at once; quotas are tested elsewhere.
                    "--TFEnvBroker.max_kernels_per_user=-1",
                    "--TFEnvBroker.max_gpus_per_user=-1",
                    # Eight kernels start at once on a loaded 2-core machine: generous.
                    "--TFEnvBroker.start_timeout=240",
                ],
                cwd=str(Path(__file__).resolve().parents[2]),  # this checkout's package
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        hub.wait_for(self._answers, 60, f"the {GPU_BROKER_SERVICE} service to answer")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"{GPU_BROKER_SERVICE} exited at start:\n{self.log()}")
        requests.get(f"{self.url}/api/me", timeout=5)  # any answer: it listens
        return True

    def log(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.runtime_root, ignore_errors=True)
        shutil.rmtree(self.probes, ignore_errors=True)


def restart_servers(hub: HubHarness) -> None:
    """Stop alice's and bob's servers, then spawn both again (at once)."""
    for name in (ALICE, BOB):
        hub.stop_server(name)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(hub.start_server, (ALICE, BOB)))


@pytest.fixture(scope="module")
def gpu_broker(
    hub: HubHarness, gpu_engine: GpuEngine, progress: Callable[[str], None]
) -> Iterator[GpuBrokerService]:
    progress(f"starting {GPU_BROKER_SERVICE} on the GPU engine {gpu_engine.url}")
    service = GpuBrokerService(hub, gpu_engine)
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def gpu_servers(hub: HubHarness, gpu_broker: GpuBrokerService) -> Iterator[None]:
    """alice's and bob's servers start kernels through the GPU broker and list its
    catalog entries; afterwards they run with the example config's arguments again."""
    for name in (ALICE, BOB):
        hub.set_server_args(
            name,
            [
                f"--DockerKernelProvisioner.broker_url={gpu_broker.url}",
                # One path: a list trait on the command line takes it as its one item.
                f"--TFEnvCatalog.catalog_files={gpu_broker.catalog}",
            ],
        )
    restart_servers(hub)
    for name in (ALICE, BOB):
        hub.token(name)  # made once, before threads use it
    try:
        yield
    finally:
        for name in (ALICE, BOB):
            hub.set_server_args(name, [])
        restart_servers(hub)


class GpuKernels:
    """Kernels started through the users' servers on the GPU engine; all shut down after."""

    def __init__(self, hub: HubHarness, engine: GpuEngine, broker: GpuBrokerService) -> None:
        self.hub = hub
        self.engine = engine
        self.broker = broker
        self.started: list[tuple[str, str]] = []

    def start_all(self, owners: list[str], env_id: str) -> list[tuple[str, requests.Response]]:
        """Start one kernel per entry of ``owners`` at once (as that user, through that
        user's server); each owner with the server's answer."""
        with ThreadPoolExecutor(len(owners)) as pool:
            answers = list(pool.map(lambda owner: self.hub.start_kernel(owner, env_id), owners))
        for owner, answer in zip(owners, answers, strict=True):
            if answer.status_code == 201:
                self.started.append((owner, str(answer.json()["id"])))
            elif answer.status_code >= 500:
                raise AssertionError(
                    f"starting tfenv-{env_id} for {owner} answered {answer.status_code} "
                    f"{answer.text}\nbroker log:\n{self.broker.log()}\nhub log:\n"
                    f"{self.hub.log_tail(150)}"
                )
        return list(zip(owners, answers, strict=True))

    def start(self, owner: str, env_id: str) -> str:
        ((_, answer),) = self.start_all([owner], env_id)
        assert answer.status_code == 201, (
            f"tfenv-{env_id} for {owner}: {answer.status_code} {answer.text}\n"
            f"broker log:\n{self.broker.log()}"
        )
        return str(answer.json()["id"])

    def container(self, kernel_id: str) -> Any:
        assert self.engine.client is not None
        found = self.engine.client.containers.list(filters={"label": f"{KERNEL_LABEL}={kernel_id}"})
        assert len(found) == 1, f"kernel {kernel_id}: containers {found} on the GPU engine"
        return found[0]

    def device(self, kernel_id: str) -> str:
        """NVIDIA_VISIBLE_DEVICES of the kernel's container (its init process, on the host)."""
        assert self.engine.client is not None
        return visible_devices(self.engine.client, self.container(kernel_id).id)

    def devices_inside(self, kernels: list[tuple[str, str]]) -> dict[str, str]:
        """kernel id → NVIDIA_VISIBLE_DEVICES as the kernel itself sees it (all at once)."""
        with ThreadPoolExecutor(len(kernels)) as pool:
            out = pool.map(lambda k: self.hub.run_code(k[0], k[1], DEVICES_CODE).strip(), kernels)
            return {kid: seen for (_, kid), seen in zip(kernels, out, strict=True)}

    def gpus(self, owner: str) -> dict[str, Any]:
        """``GET /user/<owner>/tfenv/gpus`` with the owner's token."""
        answer = self.hub.user_request("GET", owner, "tfenv/gpus", self.hub.token(owner))
        assert answer.status_code == 200, f"{owner}: {answer.status_code} {answer.text}"
        overview: dict[str, Any] = answer.json()
        return overview

    def shutdown(self, owner: str, kernel_id: str) -> None:
        answer = self.hub.shutdown_kernel(owner, kernel_id)
        assert answer.status_code == 204, f"{answer.status_code} {answer.text}"
        self.started.remove((owner, kernel_id))

    def close(self) -> None:
        with ThreadPoolExecutor(max(1, len(self.started))) as pool:
            list(pool.map(lambda k: self.hub.shutdown_kernel(*k), self.started))
        self.started.clear()
        assert self.engine.client is not None
        deadline = time.monotonic() + 30
        while self.engine.client.containers.list(all=True) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = self.engine.client.containers.list(all=True)
        for container in left:
            with contextlib.suppress(Exception):
                container.remove(force=True)
        assert not left, f"kernel containers left on the GPU engine: {[c.name for c in left]}"


@pytest.fixture
def gpu_kernels(
    hub: HubHarness, gpu_engine: GpuEngine, gpu_broker: GpuBrokerService, gpu_servers: None
) -> Iterator[GpuKernels]:
    kernels = GpuKernels(hub, gpu_engine, gpu_broker)
    try:
        yield kernels
    finally:
        kernels.close()


def holders_by_device(overview: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {row["id"]: row["holders"] for row in overview["allocation"]}


def check_overview(kernels: GpuKernels, owner: str, own: dict[str, str], other: str) -> None:
    """``owner``'s GET /tfenv/gpus: every device with its holders; ``own`` (kernel id →
    device) by id and name, the other user's kernels without either."""
    overview = kernels.gpus(owner)
    rows = holders_by_device(overview)
    assert sorted(rows) == DEVICES, overview
    mine = {h["kernel_id"]: d for d, hs in rows.items() for h in hs if h["kernel_id"]}
    assert mine == own, f"{owner}'s kernels in GET /tfenv/gpus: {overview}"
    for holders in rows.values():
        for holder in holders:
            if holder["kernel_id"] is not None:
                assert holder["owner"] == owner, holder
            else:
                assert holder["owner"] is None and "environment" not in holder, holder
    assert other not in str(overview), f"{other}'s name in {owner}'s overview: {overview}"


def test_two_users_share_four_exclusive_gpus(gpu_kernels: GpuKernels) -> None:
    kernels = gpu_kernels
    owners = [ALICE, BOB, ALICE, BOB, ALICE]
    answers = kernels.start_all(owners, "gpu1")
    started = [(o, str(a.json()["id"])) for o, a in answers if a.status_code == 201]
    refused = [(o, a) for o, a in answers if a.status_code != 201]
    assert len(started) == 4 and len(refused) == 1, (
        f"{[(o, a.status_code, a.text) for o, a in answers]}\nbroker log:\n{kernels.broker.log()}"
    )

    # Four distinct devices, by id: in the containers and as the kernels see them.
    device = {kid: kernels.device(kid) for _, kid in started}
    assert sorted(device.values()) == DEVICES, device
    assert kernels.devices_inside(started) == device

    # The fifth: refused (409, JupyterLab's "Error Starting Kernel" dialog shows the
    # message) with the holders: the user's own kernels by id and environment, the other
    # user's as a count, never by name.
    user, answer = refused[0]
    other = BOB if user == ALICE else ALICE
    message = message_of(answer)
    assert answer.status_code == 409, (answer.status_code, answer.text)
    mine = [kid for o, kid in started if o == user]
    theirs = [kid for o, kid in started if o != user]
    head = (
        "No free GPU for 'gpu1' (it needs 1 GPU, exclusive): "
        "4 of the 4 GPUs kernels may use are held. Your kernels: "
    )
    assert message.startswith(head), message
    own_list = message.split("Your kernels: ", 1)[1].split(". Other users:", 1)[0]
    assert sorted(own_list.split(", ")) == sorted(
        f"kernel {kid[:8]} (gpu1) on GPU {device[kid]}" for kid in mine
    ), message
    count = len(theirs)
    assert f" Other users: {count} kernel{'s' if count != 1 else ''} of 1 user. " in message
    assert message.endswith("Shut down a GPU kernel you no longer need, or try again later.")
    assert other not in message and not any(kid[:8] in message for kid in theirs), message

    # The panel's GET /tfenv/gpus, on each user's server: each holder.
    for owner in (ALICE, BOB):
        own = {kid: device[kid] for o, kid in started if o == owner}
        check_overview(kernels, owner, own, BOB if owner == ALICE else ALICE)

    # A shutdown (by the other user) frees a device: the refused user gets exactly it.
    freed = theirs[0]
    kernels.shutdown(other, freed)
    fifth = kernels.start(user, "gpu1")
    assert kernels.device(fifth) == device[freed]

    # A restart keeps its device: a new container, the same NVIDIA_VISIBLE_DEVICES.
    owner, kept = next((o, kid) for o, kid in started if kid != freed)
    before = kernels.container(kept).id
    answer = kernels.hub.user_request(
        "POST", owner, f"api/kernels/{kept}/restart", kernels.hub.token(owner)
    )
    assert answer.status_code == 200, f"{answer.status_code} {answer.text}"
    assert kernels.container(kept).id != before
    assert kernels.device(kept) == device[kept]
    assert kernels.devices_inside([(owner, kept)]) == {kept: device[kept]}


def test_shared_gpus_take_two_kernels_each(gpu_kernels: GpuKernels) -> None:
    kernels = gpu_kernels
    answers = kernels.start_all([ALICE, BOB] * 4, "gpu1-shared")
    bad = [(o, a.status_code, a.text) for o, a in answers if a.status_code != 201]
    assert not bad, f"{bad}\nbroker log:\n{kernels.broker.log()}"
    started = [(o, str(a.json()["id"])) for o, a in answers]
    device = {kid: kernels.device(kid) for _, kid in started}
    assert Counter(device.values()) == dict.fromkeys(DEVICES, 2), device

    for owner in (ALICE, BOB):
        overview = kernels.gpus(owner)
        rows = holders_by_device(overview)
        assert {d: len(hs) for d, hs in rows.items()} == dict.fromkeys(DEVICES, 2), overview
        assert all(h["sharing"] == "shared:2" for hs in rows.values() for h in hs), overview
        own = {kid: device[kid] for o, kid in started if o == owner}
        check_overview(kernels, owner, own, BOB if owner == ALICE else ALICE)

    # A ninth finds every device full, and says so in the sharing terms.
    ((_, ninth),) = kernels.start_all([ALICE], "gpu1-shared")
    assert ninth.status_code == 409, (ninth.status_code, ninth.text)
    assert "(it needs 1 GPU, shared, 2 kernels per GPU): 4 of the 4 GPUs" in message_of(ninth)


@pytest.mark.ui
@pytest.mark.skipif(
    chromium_executable() is None,
    reason="Chromium is not installed: run scripts/setup.sh (Debian package chromium)",
)
def test_the_panel_shows_each_holder(
    hub: HubHarness,
    gpu_kernels: GpuKernels,
    browser: Any,  # noqa: F811
) -> None:
    """alice's Lab in Chromium: a notebook on a GPU while she and bob hold two more; the
    panel's "Who holds the GPUs" names her notebook's kernel and her other one, shows
    bob's as another user's (no name, no id) and the fourth device as free."""
    from playwright.sync_api import expect

    kernels = gpu_kernels
    bobs = kernels.start(BOB, "gpu1")
    hers = kernels.start(ALICE, "gpu1")
    quiet_news(hub)
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    page = context.new_page()
    notebook_path = None
    try:
        login(page, hub)
        notebook = new_notebook(page, GPU1_NAME)
        notebook_path = page.evaluate(
            """(id) => [...window.jupyterapp.shell.widgets('main')]
                .find(w => w.id === id).context.path""",
            notebook.get_attribute("id"),
        )
        wait_kernel_idle(page, notebook)
        run_cell(page, notebook, "import os; print('gpu=' + os.environ['NVIDIA_VISIBLE_DEVICES'])")
        stdout = cell_output(notebook).locator(STDOUT)
        expect(stdout).to_have_text(re.compile(r"^\s*gpu=\d\s*$"), timeout=KERNEL_TIMEOUT_MS)
        this = stdout.inner_text().strip().removeprefix("gpu=")
        assert this not in (kernels.device(bobs), kernels.device(hers)), this

        open_panel_by_tab(page)

        def holder(device: str, kind: str) -> Any:
            return page.locator(
                f'{HOLDERS}[data-tfenv-device="{device}"] [data-tfenv-holder="{kind}"]'
            )

        expect(page.locator(HOLDERS)).to_have_count(4, timeout=KERNEL_TIMEOUT_MS)
        expect(holder(this, "this")).to_have_text("this kernel (gpu1)", timeout=KERNEL_TIMEOUT_MS)
        expect(holder(kernels.device(hers), "mine")).to_have_text(f"your kernel {hers[:8]} (gpu1)")
        expect(holder(kernels.device(bobs), "other")).to_have_text("another user\u2019s kernel")
        expect(page.locator(f'{HOLDERS}[data-tfenv-free="true"]')).to_have_count(1)
        expect(page.locator(f"{HOLDERS} [data-tfenv-holder]")).to_have_count(3)
        shown = " ".join(page.locator(HOLDERS).all_inner_texts())
        assert BOB not in shown and bobs[:8] not in shown, shown
        section = page.locator(f"{PANEL} .jp-tfenv-gpus")
        section.scroll_into_view_if_needed()
        shot = screenshot_dir() / "hub-panel-gpu-holders.png"
        section.screenshot(path=str(shot), animations="disabled")
        print(f"\n[hub-ui] GPU holders in alice's panel: {page.locator(HOLDERS).all_inner_texts()}")
    except BaseException:
        failure = Path(tempfile.gettempdir()) / "tfenv-failure-hub-gpus.png"
        with contextlib.suppress(Exception):  # best effort: the page may be gone
            page.screenshot(path=str(failure))
            print(f"\n[hub-ui] screenshot at the failure: {failure}")
        print(f"[hub-ui] hub log (tail):\n{hub.log_tail(40)}")
        raise
    finally:
        context.close()
        # The notebook's kernel (started by the Lab, not by gpu_kernels) and its file.
        for kernel in hub.list_kernels(ALICE):
            if (ALICE, kernel["id"]) not in kernels.started:
                hub.shutdown_kernel(ALICE, kernel["id"])
        if notebook_path:
            hub.user_request("DELETE", ALICE, f"api/contents/{notebook_path}", hub.token(ALICE))
