"""
Start-up failures: the one line a daemon that cannot start prints (a port in use, an access log that cannot be
opened), and how that line and the exit status reach whoever started it, in the foreground or under twistd as a
daemon.

The service raises a :class:`StartupError` from ``privilegedStartService``; :class:`StartupReport` writes its line.

- In the foreground (``twistd -n``, the ``txrevproxy`` command) the line goes to the process's standard error, the
  file descriptor: by then twistd has replaced ``sys.stderr`` with a file object that logs, so a ``print`` to it
  would come out on standard output as a log event.
- As a daemon (``twistd`` without ``-n``) the process that does the work is a grandchild of the ``twistd`` the user
  started, its descriptors 0 to 2 on ``/dev/null``. That ``twistd`` waits on a status pipe, which twistd's runner
  writes to (then removes the pidfile) when ``privilegedStartService`` or ``startService`` raises an
  ``Exception``: it then prints ``An error has occurred: ...`` (the exception's first 100 bytes) and exits 1. A
  ``SystemExit`` is not an ``Exception``: nothing was written, the pidfile stayed, and the ``twistd`` started by the
  user waited for ever. So the report keeps a duplicate of the standard error the daemon was started with, open
  across the daemonizing, writes the line there (it comes out before twistd's own report) and logs it (to
  ``twistd.log``); it closes it once the service has started, or when the process exits after a failure.

:class:`StartupError` is both an ``Exception`` (so that twistd reports it) and a ``SystemExit`` (so that what
reaches the top of the process after twistd has reported it exits with its status, without a traceback).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from twisted.logger import Logger

log = Logger(namespace="txrevproxy")

#: The standard error descriptor.
STDERR = 2


class StartupError(SystemExit, Exception):
    """
    The daemon cannot start: ``message`` is the reason, in one line; the process exits with ``status`` (1: cannot
    listen or open a file; 2: options that cannot work together on this system).
    """

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(status)
        self.message = message

    def __str__(self) -> str:
        return self.message

    @property
    def line(self) -> str:
        """
        The line printed on standard error.
        """
        return f"txrevproxy: error: {self.message}"


def is_daemon(parent: Mapping[str, object] | None) -> bool:
    """
    Whether twistd's options ``parent`` (``None``: not run by twistd) make the process a daemon: twistd without
    ``-n``, on a system where it daemonizes at all (``nodaemon`` is then an option).
    """
    return parent is not None and "nodaemon" in parent and not parent["nodaemon"]


class StartupReport:
    """
    Where a :class:`StartupError`'s line goes: standard error, or for a ``daemon`` (whose standard error is
    ``/dev/null``) the log and ``duplicate``, a duplicate of the standard error it was started with.
    """

    def __init__(self, *, daemon: bool = False, duplicate: int | None = None) -> None:
        self.daemon = daemon
        self._duplicate = duplicate

    @classmethod
    def before_daemonizing(cls, parent: Mapping[str, object] | None) -> StartupReport:
        """
        The report for a process run with twistd's options ``parent``; call it before twistd daemonizes (from
        ``makeService``): a daemon's keeps a duplicate of the standard error it was started with.
        """
        if is_daemon(parent):
            return cls(daemon=True, duplicate=os.dup(STDERR))
        return cls()

    def failed(self, error: StartupError) -> None:
        """
        Write ``error``'s line (and log it, for a daemon). A daemon's duplicate of its standard error stays open
        until the process exits (after twistd has removed the pidfile): whoever reads that standard error to its
        end (a pipe's reader) is then done only once the daemon is gone.
        """
        if self.daemon:
            log.error("cannot start: {message}", message=error.message)
            fd = self._duplicate
        else:
            fd = STDERR
        if fd is not None:
            data = (error.line + "\n").encode("utf-8", "backslashreplace")
            try:
                while data:
                    data = data[os.write(fd, data) :]
            except OSError:  # (nobody is reading any more)
                pass

    def started(self) -> None:
        """
        The service has started: close the duplicate of the standard error, if there is one.
        """
        duplicate, self._duplicate = self._duplicate, None
        if duplicate is not None:
            os.close(duplicate)
