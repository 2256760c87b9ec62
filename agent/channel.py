"""Where the pipeline's messages go: the export helper process, or a thread.

``open_channel`` returns ``send(payload) -> bool``:
- If ``takealook-run`` started the helper before exec-ing the app, the app
  finds the socket's file descriptor in ``TAKEALOOK_AGENT_FD`` (``fd:pid``) and
  checks it really is that socket (a Unix seqpacket socket created by that pid)
  before using it.
- Otherwise it starts the helper itself: a socketpair, one end passed to
  ``python -m takealook.agent.exporter``, the other kept (and inherited by
  forked workers).
- ``TAKEALOOK_EXPORT=thread``, or a helper that cannot start: an in-process
  exporter thread, with the same message format.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
from typing import Callable, Optional

from takealook.agent.exporter import Forwarder

log = logging.getLogger("takealook.agent")

FD_ENV = "TAKEALOOK_AGENT_FD"
HELPER_ENV = "TAKEALOOK_EXPORT_HELPER"  # set in the helper's environment: the agent never starts there
SEND_BUFFER = 4 << 20
# The folder holding the sitecustomize.py that takealook-run puts on PYTHONPATH.
BOOT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_autostart")

_helper: Optional[subprocess.Popen] = None
_forwarder: Optional[Forwarder] = None


def open_channel(settings) -> Callable[[bytes], bool]:
    global _forwarder
    if settings.export_mode == "process":
        sock = adopt_inherited_socket() or _spawn_helper(settings)
        if sock is not None:
            return _socket_sender(sock)
        log.warning("takealook: could not start the export helper process; exporting from a thread instead")
    _forwarder = Forwarder(settings.traces_endpoint, settings.metrics_endpoint, settings.max_queue).start()
    return _forwarder.submit


def close_channel(timeout: float = 5.0) -> None:
    if _forwarder is not None:
        _forwarder.stop(timeout)


def _socket_sender(sock: socket.socket) -> Callable[[bytes], bool]:
    sock.setblocking(False)
    send = sock.send

    def sender(payload: bytes) -> bool:
        try:
            send(payload)
            return True
        except BlockingIOError:
            return False

    return sender


def adopt_inherited_socket() -> Optional[socket.socket]:
    value = os.environ.pop(FD_ENV, "")
    if not value:
        return None
    try:
        fd_text, _, owner_text = value.partition(":")
        fd, owner = int(fd_text), int(owner_text)
        sock = socket.socket(fileno=fd)
    except (ValueError, OSError):
        return None
    try:
        pid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[0]
        if sock.family == socket.AF_UNIX and sock.type == socket.SOCK_SEQPACKET and pid == owner:
            return sock
    except OSError:
        pass
    sock.detach()  # not ours: leave the descriptor to whoever owns it
    return None


def make_socketpair() -> tuple:
    app_end, helper_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for sock, option in ((app_end, socket.SO_SNDBUF), (helper_end, socket.SO_RCVBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SEND_BUFFER)
        except OSError:
            pass
    return app_end, helper_end


def spawn_helper_process(helper_end: socket.socket, traces_endpoint: str, metrics_endpoint: str,
                         max_queue: int) -> subprocess.Popen:
    """Starts ``python -m takealook.agent.exporter`` reading ``helper_end``."""
    fd = helper_end.fileno()
    env = dict(os.environ)
    env.pop(FD_ENV, None)
    env[HELPER_ENV] = "1"
    env["PYTHONPATH"] = os.pathsep.join(_import_roots())
    command = [python_executable(), "-m", "takealook.agent.exporter", "--fd", str(fd),
               "--traces-endpoint", traces_endpoint, "--metrics-endpoint", metrics_endpoint,
               "--max-queue", str(max_queue)]
    return subprocess.Popen(command, pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            env=env, start_new_session=True, cwd="/")


def _spawn_helper(settings) -> Optional[socket.socket]:
    global _helper
    try:
        app_end, helper_end = make_socketpair()
        try:
            _helper = spawn_helper_process(helper_end, settings.traces_endpoint, settings.metrics_endpoint,
                                           settings.max_queue)
        finally:
            helper_end.close()
        return app_end
    except (OSError, subprocess.SubprocessError) as error:
        log.warning("takealook: export helper failed to start: %s", error)
        return None


def python_executable() -> str:
    """A Python interpreter for the helper (under uWSGI, sys.executable is uwsgi itself)."""
    candidates = [sys.executable, getattr(sys, "_base_executable", ""),
                  os.path.join(sys.prefix, "bin", "python3"), shutil.which("python3") or ""]
    for path in candidates:
        if path and os.path.basename(path).startswith("python") and os.access(path, os.X_OK):
            return path
    return sys.executable


def _import_roots() -> list:
    """Folders the helper needs on its path to import takealook and OpenTelemetry as the app does."""
    import opentelemetry.sdk

    import takealook

    roots = []
    for module in (takealook, opentelemetry.sdk):
        for path in getattr(module, "__path__", []):
            root = os.path.dirname(os.path.dirname(path)) if module is opentelemetry.sdk else os.path.dirname(path)
            if root not in roots:
                roots.append(root)
    roots += [p for p in sys.path if p and p not in roots and os.path.isdir(p) and os.path.abspath(p) != BOOT_DIR]
    return roots
