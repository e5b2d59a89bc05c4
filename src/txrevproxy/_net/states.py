"""
State machines: the states of one object as an Enum, the events that move it as another, and one table of the
allowed moves, checked on every move (the shape of h11's ``_state.py`` and h2's ``stream.py``).

Each machine's owner keeps its state private, changes it only through its table (:meth:`Transitions.next`), and
answers other objects' questions about it through methods (the pool asks a connection to :meth:`discard` itself;
it never writes its state). A move the table does not have is a programming error: :class:`IllegalTransition`.

Costs, for the hot paths: members of an :class:`IdentityEnum` hash by identity (a table lookup is one dict lookup
of a tuple, about 50 ns; an Enum's own ``__hash__`` is a Python call, three times that). Code that compares states
on every read uses ``is`` against module-level aliases of the members: under Python 3.11 looking up
``State.MEMBER`` on the Enum class costs about 60 ns more than reading a global.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from enum import Enum
from typing import Generic, TypeVar


class IdentityEnum(Enum):
    """
    An Enum whose members hash by identity, at C speed: for sets, dict keys and transition tables. (Members are
    singletons compared by identity, so this hash agrees with their equality.)
    """

    __hash__ = object.__hash__


S = TypeVar("S", bound=IdentityEnum)
E = TypeVar("E", bound=IdentityEnum)


class IllegalTransition(RuntimeError):
    """
    An event that the machine's table does not allow in the current state: a programming error.
    """

    def __init__(self, machine: str, state: IdentityEnum, event: IdentityEnum) -> None:
        super().__init__(f"{machine}: {event.name} is not allowed in state {state.name}")
        self.machine = machine
        self.state = state
        self.event = event


class Transitions(Generic[S, E]):
    """
    One machine's moves: ``(state, event) -> next state``; any other pair is refused.

    :param machine: the machine's name, for errors.
    :param table: the allowed moves.
    """

    def __init__(self, machine: str, table: Mapping[tuple[S, E], S]) -> None:
        self.machine = machine
        self._table = dict(table)

    def next(self, state: S, event: E) -> S:
        """
        The state ``event`` moves ``state`` to; :class:`IllegalTransition` if the table has no such move.
        """
        new = self._table.get((state, event))
        if new is None:
            raise IllegalTransition(self.machine, state, event)
        return new

    def allows(self, state: S, event: E) -> bool:
        return (state, event) in self._table

    def __iter__(self) -> Iterator[tuple[tuple[S, E], S]]:
        return iter(self._table.items())
