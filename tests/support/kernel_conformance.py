"""jupyter_kernel_test's conformance suite against a tfenv kernelspec written to disk.

Not collected directly (its name does not start with test_): ``test_conformance.py`` runs
it in a subprocess whose JUPYTER_PATH holds the kernelspec written by
``jupyter tfenv kernelspecs``, so that jupyter_client finds and starts it as nbclient or
papermill would, outside any server.
"""

from __future__ import annotations

import os
import unittest

import jupyter_kernel_test


class TFEnvKernelConformance(jupyter_kernel_test.KernelTests):
    kernel_name = os.environ.get("TFENV_CONFORMANCE_KERNEL", "tfenv-py")
    language_name = "python"
    file_extension = ".py"
    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    completion_samples = [{"text": "zi", "matches": {"zip"}}]
    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2"]
    invalid_code_samples = ["import = 7q"]
    code_page_something = "zip?"
    code_generate_error = "raise ValueError('boom')"
    code_execute_result = [
        {"code": "1+2+3", "result": "6"},
        {"code": "[n*n for n in range(3)]", "result": "[0, 1, 4]"},
    ]
    code_display_data = [
        {
            "code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))",
            "mime": "text/html",
        },
    ]
    code_history_pattern = "1?2*"
    supported_history_operations = ("tail", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"


if __name__ == "__main__":
    unittest.main()
