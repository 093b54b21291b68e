"""cq-server's and cq-emerge's own output: no traceback from paramiko's threads."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_RUN = textwrap.dedent("""
    import threading, paramiko
    from cq_portage.ssh import quiet_paramiko
    quiet_paramiko(verbose={verbose})
    for target in (lambda: paramiko.Transport(object()), lambda: 1 / 0):
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
""")


def _stderr(verbose: bool) -> str:
    done = subprocess.run([sys.executable, "-c", _RUN.format(verbose=verbose)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_an_exception_in_a_paramiko_thread_prints_no_traceback():
    stderr = _stderr(verbose=False)
    assert "paramiko" not in stderr  # paramiko's own thread: quiet
    assert "ZeroDivisionError" in stderr  # anyone else's: as Python prints it


def test_verbose_shows_it():
    assert "paramiko" in _stderr(verbose=True)
