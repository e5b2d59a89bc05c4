"""
Deadlines: one point in time after which something is done, on one lazily re-armed timer.

Every timeout of the proxy is a :class:`Deadline`. Moving one later (a read that restarts an idle or read timeout) only
stores the new due time: the pending ``DelayedCall`` fires at the old time, finds the deadline moved, and re-arms
itself for the remainder. Only a deadline moved earlier than its pending call touches the reactor's timer queue.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

# A deadline DelayedCall that fires this close to its deadline counts as expired (no re-arming for a few
# microseconds of floating-point remainder).
TIMER_SLACK = 0.001

_NEVER = float("inf")


class Deadline:
    """
    Calls ``callback(*args)`` once the due time set is reached, through at most one ``DelayedCall`` at a time.

    :meth:`set` / :meth:`set_at` store a due time; a ``DelayedCall`` is armed only when none is pending or the new
    due time is earlier than the pending one's. When the pending call fires before the due time (the deadline was
    moved later since), it re-arms itself for the remainder; at the due time (within :data:`TIMER_SLACK`) the
    deadline is no longer set and the callback is called, and may set it again.

    Two ways to have no deadline: :meth:`clear` leaves a pending ``DelayedCall`` to lapse, costing nothing now (for a
    deadline that is likely set again soon: between two requests, a pause); :meth:`cancel` cancels it (at the end of
    what the deadline times).

    The pending ``DelayedCall`` calls the deadline itself, which bears its callback's name, so that a pending timer
    reads as what it is for (``<DelayedCall ... UpstreamProtocol._checkReadDeadline()>``).
    """

    __slots__ = ("__name__", "__qualname__", "_args", "_armed", "_call", "_callback", "_clock", "_due")

    def __init__(self, clock: IReactorTime, callback: Callable[..., object], *args: object) -> None:
        self._clock = clock
        self._callback = callback
        self._args = args
        self._due: float | None = None
        self._call: IDelayedCall | None = None
        self._armed = _NEVER  # when the pending DelayedCall fires; never when there is none
        self.__name__: str = getattr(callback, "__name__", type(self).__name__)
        self.__qualname__: str = getattr(callback, "__qualname__", self.__name__)

    def __repr__(self) -> str:
        return f"<Deadline {self.__qualname__} due={self._due!r}>"

    @property
    def due(self) -> float | None:
        """When the callback is due (in the clock's seconds), or ``None`` when no deadline is set."""
        return self._due

    @property
    def active(self) -> bool:
        """Whether a deadline is set."""
        return self._due is not None

    def remaining(self) -> float | None:
        """Seconds until the due time (negative once passed), or ``None`` when no deadline is set."""
        due = self._due
        return None if due is None else due - self._clock.seconds()

    def set(self, seconds: float) -> None:
        """
        The callback is due ``seconds`` from now, whenever it was due before (cheap when moving it later).
        """
        due = self._clock.seconds() + seconds
        self._due = due
        if due < self._armed:
            self._arm(due, seconds)

    def set_at(self, due: float) -> None:
        """
        The callback is due at ``due``, in the clock's seconds.
        """
        self._due = due
        if due < self._armed:
            self._arm(due, max(due - self._clock.seconds(), 0.0))

    def clear(self) -> None:
        """
        No deadline; a pending ``DelayedCall`` is left to lapse (see the class docstring).
        """
        self._due = None

    def cancel(self) -> None:
        """
        No deadline, and no ``DelayedCall`` left pending.
        """
        self._due = None
        call = self._call
        if call is not None:
            self._call, self._armed = None, _NEVER
            call.cancel()

    def _arm(self, due: float, delay: float) -> None:
        call = self._call
        if call is None:
            self._call = self._clock.callLater(delay, self)
        else:
            call.reset(delay)
        self._armed = due

    def __call__(self) -> None:
        """
        The pending ``DelayedCall`` fired: call the callback if the due time is reached, else re-arm for the rest.
        """
        self._call, self._armed = None, _NEVER
        due = self._due
        if due is None:
            return  # cleared: the call lapses
        remaining = due - self._clock.seconds()
        if remaining > TIMER_SLACK:
            self._arm(due, remaining)
            return
        self._due = None
        self._callback(*self._args)
