"""Browser tests of the environment panel and the status bar item.

Real JupyterLab with the built labextension, Debian's Chromium, TF kernels in containers,
and a real registry on 127.0.0.1 for the pull. The panel's DOM contract is ``src/README.md``.
Screenshots of the panel go to ``conftest.screenshot_dir()`` (a temporary folder;
``bash scripts/screenshots.sh`` writes them to ``docs/screenshots/``).
"""

from __future__ import annotations

import contextlib
import itertools
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from docker.errors import ImageNotFound

from tests.support.registry import Registry, RegistryCleanup, build_image, registry  # noqa: F401

from .conftest import screenshot_dir
from .helpers import (
    KERNEL_TIMEOUT_MS,
    PRINT_TF_VERSION,
    expect_output,
    kernel_name,
    new_notebook,
    run_cell,
    run_command,
    wait_kernel_idle,
)
from .lab import PY_IMAGE, TF219, TF220, UI_CATALOG, LabServer

pytestmark = [pytest.mark.docker, pytest.mark.ui]

MiB = 1 << 20
PANEL = "#jp-tfenv-panel"
STATUS = "#jp-tfenv-status"
OPEN_PANEL_LABEL = "Open the TensorFlow Environment Panel"


@pytest.fixture(scope="module")
def pull_source(
    images: docker.DockerClient,
    registry: Registry,  # noqa: F811
) -> Iterator[dict[str, str]]:
    """An image in the local registry under a fresh tag, absent from this Docker engine.

    The python test image plus two layers of random bytes: those really download.
    """
    client = images
    cleanup = RegistryCleanup(registry, client)
    repo = registry.repo("pull")
    tag = f"3.11-{uuid.uuid4().hex[:8]}"
    try:
        built = build_image(client, f"{repo}:build", PY_IMAGE, [48 * MiB, 48 * MiB])
        digest = cleanup.push(f"{repo}:build", f"{repo}:{tag}")
        for ref in cleanup.local_refs():
            with contextlib.suppress(ImageNotFound):
                client.images.remove(ref)
        with pytest.raises(ImageNotFound):
            client.images.get(built.id)
        yield {"image": f"{repo}:{tag}", "digest": digest, "image_id": built.id}
    finally:
        cleanup.cleanup()


@pytest.fixture(scope="module")
def lab_catalog(pull_source: dict[str, str]) -> list[dict[str, Any]]:
    return [
        *UI_CATALOG,
        {
            "id": "pulled",
            "image": pull_source["image"],
            "display_name": "Python 3.11 (local registry)",
        },
    ]


def panel(page: Any) -> Any:
    return page.locator(PANEL)


def panel_state(page: Any) -> Any:
    return page.locator(f"{PANEL} .jp-tfenv-state[data-tfenv-state]")


def env_row(page: Any, env_id: str) -> Any:
    return page.locator(f'{PANEL} .jp-tfenv-env-row[data-tfenv-env="{env_id}"]')


#: Arms a timer on the tab: from the pointer going down on it to the first animation
#: frame in which the panel shows a state (``first``), and to the first frame in which
#: that state is no longer ``loading`` (``settled``).
ARM_FIRST_RENDER = """([tabSelector, stateSelector]) => {
    const tab = document.querySelector(tabSelector);
    window.__tfenvFirstRender = new Promise((resolve, reject) => {
        tab.addEventListener('pointerdown', () => {
            const t0 = performance.now();
            const inDom = document.querySelector(stateSelector) !== null;
            let first = null;
            const steps = [];
            const check = () => {
                const now = performance.now() - t0;
                const el = document.querySelector(stateSelector);
                if (el && el.getClientRects().length > 0) {
                    if (first === null) {
                        first = now;
                    }
                    const state = el.getAttribute('data-tfenv-state');
                    const step = `${state}/${el.getAttribute('data-tfenv-reason')}`;
                    if (!steps.length || steps[steps.length - 1][0] !== step) {
                        steps.push([step, Math.round(now)]);
                    }
                    if (state !== 'loading') {
                        resolve({first, settled: now, state, inDom, steps});
                        return;
                    }
                }
                if (now > 60000) {
                    reject(new Error(`the panel did not settle in 60 s (first: ${first})`));
                } else {
                    requestAnimationFrame(check);
                }
            };
            check();
        }, {once: true, capture: true});
    });
}"""


def open_panel_by_tab(page: Any) -> dict[str, Any]:
    """Click the panel's sidebar tab; return ms until its first state is on screen
    (``first``) and until that state is other than loading (``settled``, ``state``)."""
    selector = f'.lm-TabBar-tab[data-id="{PANEL[1:]}"]'
    tab = page.locator(selector)
    tab.wait_for()
    # A workspace restored with the panel open (an earlier page of the same user, e.g.
    # a hub user's): a click would close it. Close it first, then time the opening.
    if "lm-mod-current" in (tab.get_attribute("class") or ""):
        tab.click()
        page.locator(PANEL).wait_for(state="hidden")
    page.evaluate(ARM_FIRST_RENDER, [selector, f"{PANEL} .jp-tfenv-state"])
    tab.click()
    return dict(page.evaluate("() => window.__tfenvFirstRender"))


def widen_right_sidebar(page: Any, pixels: int = 130) -> None:
    """Drag the splitter between the main area and the right sidebar to the left."""
    handle = page.evaluate(
        """() => {
            const handles = [...document.querySelectorAll(
                '#jp-main-split-panel > .lm-SplitPanel-handle:not(.lm-mod-hidden)')];
            const boxes = handles.map(h => h.getBoundingClientRect()).filter(b => b.height > 0);
            boxes.sort((a, b) => b.x - a.x);
            return boxes.length ? {x: boxes[0].x + boxes[0].width / 2,
                                   y: boxes[0].y + boxes[0].height / 2} : null;
        }"""
    )
    assert handle is not None, "no splitter beside the right sidebar"
    page.mouse.move(handle["x"], handle["y"])
    page.mouse.down()
    page.mouse.move(handle["x"] - pixels / 2, handle["y"], steps=5)
    page.mouse.move(handle["x"] - pixels, handle["y"], steps=5)
    page.mouse.up()


def capture_panel(page: Any, name: str) -> None:
    """Screenshot the whole panel to screenshot_dir()/NAME (a window tall enough for it)."""
    width = page.evaluate("() => document.querySelector('#jp-right-stack').offsetWidth")
    if width < 360:
        widen_right_sidebar(page, 380 - width)
    viewport = page.viewport_size
    needed = page.evaluate(
        """(selector) => {
            const panel = document.querySelector(selector);
            const content = panel.querySelector('.jp-tfenv-content') || panel;
            return panel.getBoundingClientRect().top + content.scrollHeight + 48;
        }""",
        PANEL,
    )
    height = int(min(max(viewport["height"], needed), 2400))
    page.set_viewport_size({"width": viewport["width"], "height": height})
    try:
        page.wait_for_function(
            """(selector) => {
                const panel = document.querySelector(selector);
                return panel && panel.scrollHeight <= panel.clientHeight + 1;
            }""",
            arg=PANEL,
            timeout=10_000,
        )
        page.locator(PANEL).screenshot(path=str(screenshot_dir() / name), animations="disabled")
    finally:
        page.set_viewport_size(viewport)


def expect_panel_state(page: Any, state: str, timeout: float = KERNEL_TIMEOUT_MS) -> Any:
    from playwright.sync_api import expect

    locator = panel_state(page)
    expect(locator).to_have_attribute("data-tfenv-state", state, timeout=timeout)
    return locator


def test_panel_status_bar_and_switching_environments(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    nb = new_notebook(page, "TensorFlow 2.20.0 (CPU)")
    wait_kernel_idle(page, nb)
    run_cell(page, nb, PRINT_TF_VERSION)
    assert expect_output(nb, "2.20.0") == "2.20.0"

    # The panel, on a warm server: how long until its first state is on screen.
    timing = open_panel_by_tab(page)
    expect_panel_state(page, "ok")
    print(
        f"\n[ui] panel opened on a running kernel: first state on screen after "
        f"{timing['first']:.0f} ms (budget 300 ms), {timing['state']!r} after "
        f"{timing['settled']:.0f} ms (from the tab click, in-page clock; state in the DOM "
        f"before the click: {timing['inDom']}); states (state/reason, ms): {timing['steps']}"
    )

    content = page.locator(f"{PANEL} .jp-tfenv-content")
    expect(content).to_have_attribute("data-tfenv-active-env", "tf220")
    expect(page.locator(f'{PANEL} .jp-tfenv-kernel[data-tfenv-env="tf220"]')).to_be_visible()
    expect(page.locator(f"{PANEL} .jp-tfenv-tf-version")).to_have_text("2.20.0")
    expect(page.locator(f"{PANEL} .jp-tfenv-image")).to_have_text(TF220)
    expect(page.locator(f"{PANEL} .jp-tfenv-build")).to_have_text("CPU only (no CUDA)")
    expect(page.locator(f"{PANEL} .jp-tfenv-gpu-state")).to_have_attribute(
        "data-tfenv-gpu-state", "not-requested"
    )
    expect(page.locator(f"{PANEL} .jp-tfenv-resources .jp-tfenv-memory")).to_be_visible()
    expect(env_row(page, "tf220")).to_have_attribute("data-tfenv-current", "true")
    expect(env_row(page, "tf219")).to_have_attribute("data-tfenv-present", "true")
    expect(env_row(page, "missing")).to_have_attribute("data-tfenv-present", "false")
    expect(env_row(page, "missing").locator(".jp-tfenv-presence")).to_have_text("not pulled")
    # The status bar names the version of the active kernel.
    status = page.locator(STATUS)
    expect(status.locator(".jp-tfenv-status-text")).to_have_text("TF 2.20.0 · CPU")
    expect(status.locator(".jp-tfenv-status-item")).to_have_attribute("data-tfenv-env", "tf220")

    widen_right_sidebar(page, 130)
    page.screenshot(path=str(screenshot_dir() / "lab-panel.png"), animations="disabled")
    capture_panel(page, "panel.png")
    run_command(page, "Use Theme: JupyterLab Dark")
    expect(page.locator("body")).to_have_attribute("data-jp-theme-name", "JupyterLab Dark")
    capture_panel(page, "panel-dark.png")
    run_command(page, "Use Theme: JupyterLab Light")
    expect(page.locator("body")).to_have_attribute("data-jp-theme-name", "JupyterLab Light")

    # Switch the notebook to 2.19.0 from the panel's list: same notebook, other kernel.
    notebook_id = nb.get_attribute("id")
    env_row(page, "tf219").locator(".jp-tfenv-switch").click()
    # The kernel ran a cell: the switch asks first (tests/ui/test_switching.py).
    confirm = page.locator(".jp-Dialog").filter(has=page.locator(".jp-tfenv-switch-confirm"))
    confirm.locator("button.jp-mod-warn").click()
    expect(kernel_name(nb)).to_have_text("TensorFlow 2.19.0 (CPU)", timeout=KERNEL_TIMEOUT_MS)
    wait_kernel_idle(page, nb)
    run_cell(page, nb)
    assert expect_output(nb, "2.19.0") == "2.19.0"
    assert nb.get_attribute("id") == notebook_id
    expect(status.locator(".jp-tfenv-status-text")).to_have_text(
        "TF 2.19.0 · CPU", timeout=KERNEL_TIMEOUT_MS
    )
    expect_panel_state(page, "ok")
    expect(content).to_have_attribute("data-tfenv-active-env", "tf219")
    expect(page.locator(f"{PANEL} .jp-tfenv-tf-version")).to_have_text("2.19.0")
    expect(page.locator(f"{PANEL} .jp-tfenv-image")).to_have_text(TF219)
    expect(env_row(page, "tf219")).to_have_attribute("data-tfenv-current", "true")
    expect(env_row(page, "tf220")).to_have_attribute("data-tfenv-current", "false")
    # The 2.20.0 kernel is shut down (its container removed) once the switch is done.
    deadline = time.monotonic() + 60
    while (names := [k["name"] for k in lab.api("GET", "api/kernels")]) != ["tfenv-tf219"]:
        assert time.monotonic() < deadline, f"kernels after the switch: {names}"
        time.sleep(0.5)
    capture_panel(page, "panel-switched.png")


def test_panel_from_the_palette_and_a_kernel_that_is_not_tfenv(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    # The Launcher has its own section of the environments.
    cards = page.locator('.jp-LauncherCard[data-category="TensorFlow environments"]')
    expect(cards.filter(has_text="TensorFlow 2.20.0 (CPU)")).to_have_count(1)
    expect(cards.filter(has_text="TensorFlow 2.19.0 (CPU)")).to_have_count(1)

    expect(page.locator(PANEL)).to_be_hidden()
    run_command(page, OPEN_PANEL_LABEL)
    expect(page.locator(PANEL)).to_be_visible()
    # No notebook: the panel says so, and lists the environments.
    state = expect_panel_state(page, "no-kernel", timeout=30_000)
    expect(state).to_have_attribute("data-tfenv-reason", "no-session")
    expect(env_row(page, "tf220")).to_be_visible()
    expect(env_row(page, "tf220").locator(".jp-tfenv-switch")).to_be_disabled()

    # A kernel that is not a tfenv kernel: no status bar item, and the panel says why.
    nb = new_notebook(page, "Python 3 (ipykernel)")
    wait_kernel_idle(page, nb)
    state = expect_panel_state(page, "no-kernel", timeout=30_000)
    expect(state).to_have_attribute("data-tfenv-reason", "not-tfenv")
    expect(page.locator(STATUS)).to_be_hidden()
    expect(env_row(page, "tf220").locator(".jp-tfenv-switch")).to_be_enabled()


def test_gpu_environment_shows_why_there_is_no_gpu(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    gpus = lab.api("GET", "tfenv/gpus")
    if gpus.get("state") == "ok" and (gpus.get("runtime") or {}).get("nvidia"):
        pytest.skip("this host has an NVIDIA driver and runtime: no no-GPU state to show")
    new_notebook(page, "Python 3.11 (all GPUs)")
    error = page.locator(".jp-Dialog").filter(has_text="Error Starting Kernel")
    error.wait_for(timeout=KERNEL_TIMEOUT_MS)
    expect(error).to_contain_text("NVIDIA")
    error.locator("button.jp-mod-accept, button.jp-mod-reject").first.click()

    open_panel_by_tab(page)
    state = expect_panel_state(page, "no-gpu")
    expect(state.locator(".jp-tfenv-server-message")).to_contain_text("NVIDIA")
    gpu_state = page.locator(f"{PANEL} .jp-tfenv-gpu-state")
    expect(gpu_state).to_have_attribute(
        "data-tfenv-gpu-state", re.compile(r"^(no-driver|no-gpu|no-nvml-library|no-runtime)$")
    )
    message = gpu_state.inner_text()
    assert "NVIDIA" in message, message
    print(f"\n[ui] no-GPU state: {state.inner_text()[:300]!r}")
    print(f"[ui] GPU section: {message[:300]!r}")
    capture_panel(page, "panel-no-gpu.png")
    assert lab.api("GET", "api/kernels") == []


def test_missing_image_panel_says_not_pulled(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    new_notebook(page, "TensorFlow 9.9.9 (CPU)")
    error = page.locator(".jp-Dialog").filter(has_text="Error Starting Kernel")
    error.wait_for(timeout=KERNEL_TIMEOUT_MS)
    expect(error).to_contain_text("is not on this Docker engine")
    error.locator("button.jp-mod-accept, button.jp-mod-reject").first.click()

    # The status bar item flags it; a click on it opens the panel.
    item = page.locator(f"{STATUS} .jp-tfenv-status-item")
    expect(item).to_have_attribute("data-tfenv-env", "missing")
    expect(item.locator(".jp-tfenv-status-problem")).to_have_text("not pulled")
    expect(page.locator(PANEL)).to_be_hidden()
    item.click()
    expect(page.locator(PANEL)).to_be_visible()
    state = expect_panel_state(page, "not-pulled")
    expect(state.locator(".jp-tfenv-server-message")).to_contain_text(
        "is not on this Docker engine"
    )
    expect(state.locator(".jp-tfenv-pull")).to_be_visible()
    expect(page.locator(f'{PANEL} .jp-tfenv-kernel[data-tfenv-env="missing"]')).to_be_visible()
    expect(env_row(page, "missing").locator(".jp-tfenv-presence")).to_have_text("not pulled")
    expect(env_row(page, "missing").locator(".jp-tfenv-switch")).to_be_disabled()
    capture_panel(page, "panel-not-pulled.png")


#: Records every state and percent a pull's progress element shows, however briefly.
WATCH_PULL = """(rowSelector) => {
    window.__tfenvPullSeen = [];
    const record = () => {
        const el = document.querySelector(rowSelector + ' .jp-tfenv-pull-progress');
        if (!el) { return; }
        const bar = el.querySelector('[role=progressbar]');
        const entry = [el.getAttribute('data-tfenv-pull-state'),
                       bar ? Number(bar.getAttribute('aria-valuenow')) : null];
        const seen = window.__tfenvPullSeen;
        const last = seen[seen.length - 1];
        if (!last || last[0] !== entry[0] || last[1] !== entry[1]) { seen.push(entry); }
    };
    new MutationObserver(record).observe(document.body,
        {subtree: true, childList: true, attributes: true});
}"""


def capture_pulling(row: Any, progress: Any) -> None:
    """Best effort: a screenshot of the row while the pull is under way (it is quick)."""
    from playwright.sync_api import Error, expect

    pulling = re.compile(r"^pulling$")
    target = screenshot_dir() / "pull-progress.png"
    try:
        expect(progress.locator("[role=progressbar]")).to_have_attribute(
            "aria-valuenow", re.compile(r"^([1-9]|[1-8][0-9])$"), timeout=30_000
        )
        expect(progress).to_have_attribute("data-tfenv-pull-state", pulling, timeout=100)
        shot = row.screenshot(animations="disabled", timeout=5_000)
        expect(progress).to_have_attribute("data-tfenv-pull-state", pulling, timeout=100)
    except (AssertionError, Error) as err:
        print(f"\n[ui] no screenshot of the pull under way (it went too fast): {err}"[:300])
        return
    target.write_bytes(shot)


def test_pull_from_the_local_registry_shows_progress(
    page: Any, lab: LabServer, pull_source: dict[str, str], images: docker.DockerClient
) -> None:
    from playwright.sync_api import expect

    open_panel_by_tab(page)
    widen_right_sidebar(page, 130)
    row = env_row(page, "pulled")
    expect(row).to_have_attribute("data-tfenv-present", "false", timeout=30_000)
    row_selector = f'{PANEL} .jp-tfenv-env-row[data-tfenv-env="pulled"]'
    page.evaluate(WATCH_PULL, row_selector)
    row.locator(".jp-tfenv-pull").click()
    progress = row.locator(".jp-tfenv-pull-progress")
    capture_pulling(row, progress)
    expect(progress).to_have_attribute(
        "data-tfenv-pull-state", re.compile(r"^(done|error|cancelled)$"), timeout=300_000
    )
    state = progress.get_attribute("data-tfenv-pull-state")
    assert state == "done", f"the pull ended {state}: {progress.inner_text()}"
    expect(progress.locator("[role=progressbar]")).to_have_attribute("aria-valuenow", "100")
    expect(row).to_have_attribute("data-tfenv-present", "true", timeout=30_000)
    capture_panel(page, "panel-pulled.png")

    seen = page.evaluate("() => window.__tfenvPullSeen")
    print(f"\n[ui] pull progress seen (state, %): {seen}")
    states = [s for s, _ in seen]
    assert "pulling" in states, seen
    assert states.index("pulling") < states.index("done"), seen
    percents = [p for s, p in seen if s == "pulling" and p is not None]
    assert any(0 <= p < 100 for p in percents), seen
    assert states[-1] == "done", seen
    percents_in_order = [p for _, p in seen if p is not None]
    backwards = [(a, b) for a, b in itertools.pairwise(percents_in_order) if b < a]
    if backwards:
        print(f"[ui] NOTE: the pull's percent went backwards: {backwards}")

    image = images.images.get(pull_source["image"])
    assert image.id == pull_source["image_id"]
    repo = pull_source["image"].rsplit(":", 1)[0]
    assert f"{repo}@{pull_source['digest']}" in (image.attrs.get("RepoDigests") or [])
