"""
State machines: the states of one object as an Enum, the events that move it as another, and one table of the
allowed moves, checked on every move (the shape of h11's ``_state.py`` and h2's ``stream.py``).

Each machine's owner keeps its state to itself, changes it only through its table (``state = moves[event][state]``),
and answers other objects' questions about it through methods (the pool asks a connection to ``discard`` itself;
it never writes its state). A move the table does not have is a programming error: :class:`IllegalTransition`.

Costs, for the hot paths (a few moves per request): the table is kept by event, so that a move is two dict lookups
with no tuple and no Python call (about 60 ns; ``next(state, event)`` costs twice that), and members of an
:class:`IdentityEnum` hash by identity, at C speed (an Enum's own ``__hash__`` is a Python call). Code that compares
states on every read uses ``is`` against module-level aliases of the members: under Python 3.11 looking up
``State.MEMBER`` on the Enum class costs about 60 ns more than reading a global.
"""

from __future__ import annotations

from collections.abc import Mapping
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


class Moves(dict[S, S], Generic[S, E]):
    """
    The moves of one event: ``state -> next state``; looking up any other state raises :class:`IllegalTransition`.
    """

    __slots__ = ("event", "machine")

    def __init__(self, machine: str, event: E) -> None:
        super().__init__()
        self.machine = machine
        self.event = event

    def __missing__(self, state: S) -> S:
        raise IllegalTransition(self.machine, state, self.event)


class Transitions(dict[E, Moves[S, E]], Generic[S, E]):
    """
    One machine's moves, given as ``(state, event) -> next state`` and kept by event: ``transitions[event][state]``
    is the next state, and any pair not given raises :class:`IllegalTransition`.

    :param machine: the machine's name, for errors.
    :param table: the allowed moves (every event of the events' Enum has an entry, with no moves if none is given).
    """

    def __init__(self, machine: str, table: Mapping[tuple[S, E], S]) -> None:
        super().__init__()
        self.machine = machine
        for (state, event), new in table.items():
            if not self:
                for each in type(event):
                    self[each] = Moves(machine, each)
            self[event][state] = new

    def __missing__(self, event: E) -> Moves[S, E]:
        raise KeyError(f"{self.machine}: {event!r} is none of its events")

    def next(self, state: S, event: E) -> S:
        """
        The state ``event`` moves ``state`` to; :class:`IllegalTransition` if the table has no such move.
        """
        return self[event][state]

    def allows(self, state: S, event: E) -> bool:
        return state in self[event]

    def pairs(self) -> dict[tuple[S, E], S]:
        """
        The table as given: ``(state, event) -> next state``.
        """
        return {(state, event): new for event, moves in self.items() for state, new in moves.items()}
