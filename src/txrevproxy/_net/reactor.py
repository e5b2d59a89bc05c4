"""
The reactor's type: the intersection of the reactor interfaces txrevproxy calls, for annotations.
"""

from __future__ import annotations

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorProcess,
    IReactorSocket,
    IReactorTCP,
    IReactorTime,
    IReactorUNIX,
)


class IProxyReactor(
    IReactorCore, IReactorTime, IReactorTCP, IReactorUNIX, IReactorSocket, IReactorProcess, IReactorFDSet
):
    """
    The reactor txrevproxy's daemon uses: the intersection of the interfaces it calls (``IReactorFDSet``: the
    ports it adopts and standard input read through it).

    For type checking only (as treq's ``_ITreqReactor``): Twisted's reactors declare the interfaces one by one, not
    this one, so ``IProxyReactor.providedBy(reactor)`` is false of them all; a reactor is given this type with
    ``typing.cast`` where it comes from Twisted untyped (the global one).
    """
