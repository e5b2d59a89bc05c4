"""
A worker's UNIX listening port, on the socket the supervisor bound and shares with every worker.
"""

from __future__ import annotations

from twisted.internet import tcp, unix
from twisted.internet.interfaces import IProtocolFactory, IReactorFDSet
from twisted.python.failure import Failure

from txrevproxy._net.twisted_private import adopt_listening_port


class SharedUNIXPort(unix.Port):
    """
    A UNIX port on a listening socket shared with other processes, which it leaves as it found it when it stops.

    Twisted's UNIX port, adopted from a descriptor, does two things when it stops that a worker must not do:

    - it removes the socket's path. The path is the supervisor's: it bound the socket, and removes the path when it
      stops. A worker that removed it would take it away from the other workers and from its own replacement, and
      leave the supervisor's removal to fail (a ``FileNotFoundError`` logged as critical at SIGTERM);
    - it calls ``shutdown`` on the socket before closing its descriptor, which stops the socket accepting in every
      process that shares it: after one worker stopped, clients of the others were refused. (Twisted's TCP port
      skips the ``shutdown`` for an adopted socket; its UNIX port does not.)
    """

    #: No ``shutdown`` of the socket (see above); closing this process's descriptor is all.
    _shouldShutdown = False  # (one of twisted_private.UNIX_PORT_HOOKS)

    @classmethod
    def adopt(cls, reactor: IReactorFDSet, fd: int, factory: IProtocolFactory) -> SharedUNIXPort:
        """
        A port listening on the UNIX socket ``fd`` (which it duplicates: ``fd`` stays open), as
        ``reactor.adoptStreamPort`` makes one.
        """
        port = adopt_listening_port(cls, reactor, fd, factory)
        unix.Port.startListening(port)
        return port

    def connectionLost(self, reason: Failure) -> None:
        # unix.Port's removes the path, then releases its lock file (which an adopted port never takes).
        tcp.Port.connectionLost(self, reason)
