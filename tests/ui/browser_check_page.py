"""The browser half of ``jupyterlab.browser_check``, in Debian's Chromium.

JupyterLab's own ``browser-test.js`` needs Node.js and downloads a browser; this does what it
does — open the page, wait for the application to start, fail on any error JupyterLab
collected in ``#browserTest`` — with Python playwright and ``/usr/bin/chromium``, and also
checks that the jupyter-tfenv plugins are activated.

    python tests/ui/browser_check_page.py URL [SCREENSHOT.png]  # or $TFENV_BROWSER_CHECK_SCREENSHOT

Run by ``test_wheel.py`` as the browser of ``browser_check`` in a venv without Node.js.
"""

from __future__ import annotations

import json
import os
import sys

from playwright.sync_api import sync_playwright

try:
    from .lab import CHROMIUM_ARGS, chromium_executable
except ImportError:  # run as a script
    from lab import CHROMIUM_ARGS, chromium_executable  # type: ignore[no-redef]

PLUGIN_PREFIX = "jupyter-tfenv:"


def check(url: str, screenshot: str | None = None) -> int:
    executable = chromium_executable()
    if executable is None:
        print("browser_check_page: Chromium is not installed", file=sys.stderr)
        return 2
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(100_000)
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(f"page error: {err}"))
            print(f"browser_check_page: opening {url}", flush=True)
            page.goto(url)
            page.locator("#jupyter-config-data").wait_for(state="attached")
            page.locator("#main").wait_for()
            report = page.locator("#browserTest")
            report.wait_for(state="attached")
            page.locator(".completed").wait_for(state="attached")
            for item in json.loads(report.text_content() or "[]"):
                errors.append(f"JupyterLab reported: {item.get('message', item)}")
            plugins = page.evaluate(
                """(prefix) => {
                    const app = window.jupyterapp;
                    return app.listPlugins().filter(id => id.startsWith(prefix)).map(
                        id => [id, app.isPluginActivated(id)]);
                }""",
                PLUGIN_PREFIX,
            )
            print(f"browser_check_page: plugins {plugins}", flush=True)
            if not plugins:
                errors.append(f"no {PLUGIN_PREFIX}* plugin is registered: labextension missing")
            errors += [f"plugin {pid} is not activated" for pid, active in plugins if not active]
            if screenshot:
                page.screenshot(path=screenshot)
        finally:
            browser.close()
    for error in errors:
        print(f"browser_check_page: {error}", file=sys.stderr)
    if errors:
        return 1
    print("browser_check_page: JupyterLab started without errors", flush=True)
    return 0


if __name__ == "__main__":
    shot = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("TFENV_BROWSER_CHECK_SCREENSHOT")
    sys.exit(check(sys.argv[1], shot))
