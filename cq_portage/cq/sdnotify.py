"""systemd's readiness protocol (sd_notify(3)), in the few lines it takes.

Not a library: `sdnotify` has had no release since 2017 and `systemd-python` needs
libsystemd's headers and a compiler to install; the protocol is one datagram to the socket
named by $NOTIFY_SOCKET, stable since systemd 209. The variable is taken out of the
environment at once so that jobs, which inherit the server's environment, cannot speak for
the server.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

_address = os.environ.pop("NOTIFY_SOCKET", None)


def notify(state: str) -> bool:
    """Send e.g. "READY=1" or "STOPPING=1"; False when not started by systemd."""
    if not _address:
        return False
    address = "\0" + _address[1:] if _address.startswith("@") else _address  # abstract
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(state.encode())
    except OSError as e:
        log.warning("cannot tell systemd %s: %s", state, e)
        return False
    return True
