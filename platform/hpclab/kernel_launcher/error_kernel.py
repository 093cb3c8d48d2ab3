"""A stand-in kernel that tells the user why the real one cannot start.

A kernel process that exits at once makes Jupyter restart it a few times and then show "kernel
died" with no reason. Instead the launcher starts this kernel (with the server's own Python and
ipykernel): it connects normally, its banner carries the reason, and every cell answers with an
error whose text is the reason, so JupyterLab shows it under the cell. It runs no code.
"""

from __future__ import annotations

import sys

#: ``ename`` of the error every cell gets.
ERROR_NAME = "KernelNotAvailable"


def start_error_kernel(message: str, connection_file: str) -> int:
    """Serve the error kernel on ``connection_file`` until Jupyter shuts it down."""
    print(message, file=sys.stderr, flush=True)  # also in the server's log
    try:
        from ipykernel.kernelapp import IPKernelApp
        from ipykernel.kernelbase import Kernel
    except ImportError:  # the server's Python has no ipykernel: the log line above is all we can do
        return 1

    class ErrorKernel(Kernel):
        implementation = "hpclab-error-kernel"
        implementation_version = "1.0"
        language = "python"
        language_version = "3"
        language_info = {"name": "python", "mimetype": "text/x-python", "file_extension": ".py"}
        banner = message

        def do_execute(self, code, silent, store_history=True, user_expressions=None, allow_stdin=False, **kwargs):
            content = {"ename": ERROR_NAME, "evalue": message, "traceback": [f"\x1b[0;31m{ERROR_NAME}\x1b[0m: {message}"]}
            if not silent:
                self.send_response(self.iopub_socket, "error", content)
            return {"status": "error", "execution_count": self.execution_count, **content}

        def do_complete(self, code, cursor_pos):
            return {"status": "ok", "matches": [], "cursor_start": cursor_pos, "cursor_end": cursor_pos, "metadata": {}}

    IPKernelApp.launch_instance(argv=["-f", connection_file], kernel_class=ErrorKernel)
    return 0
