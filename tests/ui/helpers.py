"""What a person does in JupyterLab, as playwright steps (sync API)."""

from __future__ import annotations

import re
from typing import Any

#: A TensorFlow kernel's container starts and imports TF in ~10-30 s on a 2-core machine.
KERNEL_TIMEOUT_MS = 180_000

STDOUT = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stdout']"

PRINT_TF_VERSION = "import tensorflow as tf; print(tf.__version__)"


def run_command(page: Any, label: str) -> None:
    """Run a command through the command palette (Ctrl+Shift+C), by its exact label."""
    palette = page.locator("#modal-command-palette")
    page.keyboard.press("Control+Shift+C")
    palette_input = palette.locator(".lm-CommandPalette-input")
    palette_input.wait_for()
    palette_input.fill(label)
    exact = re.compile(rf"^\s*{re.escape(label)}\s*$")
    item = palette.locator(".lm-CommandPalette-item").filter(
        has=page.locator(".lm-CommandPalette-itemLabel", has_text=exact)
    )
    item.first.click()


def new_notebook_dialog(page: Any) -> Any:
    """File > New > Notebook; return the "Select Kernel" dialog it opens."""
    page.locator(".lm-MenuBar-itemLabel", has_text="File").click()
    page.locator(".lm-Menu-item[data-type='submenu']", has_text="New").first.hover()
    page.locator(".lm-Menu-item[data-command='notebook:create-new']").click()
    dialog = page.locator(".jp-Dialog").filter(has_text="Select Kernel")
    dialog.wait_for()
    return dialog


def pick_kernel(dialog: Any, display_name: str) -> None:
    """Pick a kernel by its display name in a "Select Kernel" dialog and accept.

    An environment that cannot run here is listed as "NAME — unavailable: REASON".
    """
    select = dialog.locator("select")
    # The picker is filled in once the catalog is known.
    select.locator("option[data-tfenv-env]").first.wait_for(state="attached")
    texts = select.locator("option").all_inner_texts()
    label = next(
        (t for t in texts if t == display_name or t.startswith(f"{display_name} — ")),
        display_name,
    )
    select.select_option(label=label)
    dialog.locator("button.jp-mod-accept").click()


def new_notebook(page: Any, display_name: str) -> Any:
    """A new notebook with the kernel ``display_name``; return its panel."""
    known = page.locator(".jp-NotebookPanel").count()
    pick_kernel(new_notebook_dialog(page), display_name)
    panel = page.locator(".jp-NotebookPanel").nth(known)
    panel.wait_for()
    return panel


def kernel_name(panel: Any) -> Any:
    """The notebook toolbar's kernel name button."""
    return panel.locator(".jp-Toolbar .jp-KernelName, .jp-Toolbar [data-jp-item-name='kernelName']")


def wait_kernel_idle(page: Any, panel: Any, timeout: float = KERNEL_TIMEOUT_MS) -> None:
    """Wait until the notebook's kernel is connected and idle (the toolbar indicator)."""
    panel.locator(".jp-Notebook").wait_for()
    panel_id = panel.get_attribute("id")
    page.wait_for_function(
        """(id) => {
            const widget = [...window.jupyterapp.shell.widgets('main')].find(w => w.id === id);
            const kernel = widget && widget.sessionContext && widget.sessionContext.session
                && widget.sessionContext.session.kernel;
            return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
        }""",
        arg=panel_id,
        timeout=timeout,
    )


def run_cell(page: Any, panel: Any, code: str | None = None, index: int = 0) -> None:
    """Type ``code`` (when given) into the empty cell ``index`` and run it in place."""
    cell = panel.locator(".jp-Notebook .jp-Cell").nth(index)
    editor = cell.locator(".cm-content")
    editor.click()
    if code is not None:
        editor.press_sequentially(code)
    page.keyboard.press("Control+Enter")


def cell_output(panel: Any, index: int = 0) -> Any:
    """The output area of cell ``index``."""
    return panel.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-OutputArea")


def expect_output(panel: Any, text: str, index: int = 0, timeout: float = KERNEL_TIMEOUT_MS) -> str:
    """Wait until cell ``index`` has run and its stdout is ``text``; return the stdout."""
    from playwright.sync_api import expect

    cell = panel.locator(".jp-Notebook .jp-Cell").nth(index)
    output = cell.locator(STDOUT)
    expect(output).to_have_text(re.compile(rf"^\s*{re.escape(text)}\s*$"), timeout=timeout)
    # The prompt shows "[n]:" once the execution is over ("[*]:" while it runs).
    expect(cell.locator(".jp-InputArea-prompt")).to_have_text(
        re.compile(r"\[\d+\]"), timeout=timeout
    )
    return "\n".join(output.all_inner_texts()).strip()
