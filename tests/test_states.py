"""
The state machines, each walked over every (state, event) pair: the moves its table allows, with the state each
leads to, and every other pair refused as a programming error; and the owners keeping their state to themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from itertools import product
from typing import cast

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.resource import Resource

from txrevproxy._http.framing import NO_BODY, ChunkedDecoder, ChunkedState, FramingError
from txrevproxy._net.states import IdentityEnum, IllegalTransition, Transitions
from txrevproxy._relay import exchange
from txrevproxy._relay.exchange import RelayEvent, RelayState
from txrevproxy._server import channel, h2
from txrevproxy._server.channel import Phase, PhaseEvent, ProxyChannel, ProxySite
from txrevproxy._server.h2 import BodyEvent, BodyState
from txrevproxy._upstream import protocol as upstream
from txrevproxy._upstream.pool import UpstreamAddress, UpstreamPool
from txrevproxy._upstream.protocol import ConnectionEvent, ConnectionState, UpstreamProtocol


def walk(
    moves: Transitions,  # type: ignore[type-arg]
    states: Iterable[Enum],
    events: Iterable[Enum],
    allowed: Mapping[tuple[Enum, Enum], Enum],
) -> None:
    """
    Every (state, event) pair: the allowed ones lead where ``allowed`` says, the others raise IllegalTransition (by
    ``next`` and by ``moves[event][state]``, the owners' way).
    """
    pairs = list(product(states, events))
    assert set(allowed) <= set(pairs)
    for state, event in pairs:
        if (state, event) in allowed:
            assert moves.allows(state, event), (state, event)
            assert moves.next(state, event) is allowed[state, event], (state, event)
            assert moves[event][state] is allowed[state, event], (state, event)
        else:
            assert not moves.allows(state, event), (state, event)
            with pytest.raises(IllegalTransition) as by_next:
                moves.next(state, event)
            with pytest.raises(IllegalTransition) as by_index:
                moves[event][state]
            for raised in (by_next, by_index):
                assert (raised.value.state, raised.value.event) == (state, event)
    assert moves.pairs() == dict(allowed)


# -- the machinery ---------------------------------------------------------------------------------------------------


class Light(IdentityEnum):
    RED = "red"
    GREEN = "green"


class Change(IdentityEnum):
    GO = "go"
    STOP = "stop"


def test_identity_enum_members_hash_by_identity() -> None:
    """IdentityEnum members hash by identity (C speed) and still work as set members and dict keys."""
    assert hash(Light.RED) == object.__hash__(Light.RED)
    assert Light.RED in {Light.RED} and Light.GREEN not in {Light.RED}
    assert {(Light.RED, Change.GO): 1}[Light.RED, Change.GO] == 1
    assert Light("red") is Light.RED


def test_a_move_not_in_the_table_is_refused_with_its_names() -> None:
    """A move missing from the table raises IllegalTransition naming the machine, the event and the state."""
    moves = Transitions[Light, Change]("Light", {(Light.RED, Change.GO): Light.GREEN})
    assert moves.next(Light.RED, Change.GO) is Light.GREEN
    with pytest.raises(IllegalTransition, match=r"^Light: STOP is not allowed in state RED$"):
        moves.next(Light.RED, Change.STOP)
    with pytest.raises(IllegalTransition, match=r"^Light: GO is not allowed in state GREEN$"):
        moves[Change.GO][Light.GREEN]
    assert dict(moves[Change.STOP]) == {}  # every event has its moves, none if none is given


def test_walk_checks_the_whole_table() -> None:
    """The walk itself fails on a table with a move the expected table does not have."""
    moves = Transitions[Light, Change]("Light", {(Light.RED, Change.GO): Light.GREEN})
    with pytest.raises(AssertionError):
        walk(moves, Light, Change, {})


# -- the upstream connection -----------------------------------------------------------------------------------------

S, E = ConnectionState, ConnectionEvent

CONNECTION_MOVES = {
    (S.IDLE, E.SEND): S.HEAD,
    (S.HEAD, E.RESPONSE): S.BODY,
    (S.HEAD, E.SWITCH): S.TUNNEL,
    (S.BODY, E.REUSABLE): S.IDLE,
    (S.BODY, E.SPENT): S.DEAD,
    (S.IDLE, E.DISCARD): S.DEAD,
    (S.IDLE, E.FAIL): S.DEAD,
    (S.HEAD, E.FAIL): S.DEAD,
    (S.BODY, E.FAIL): S.DEAD,
    (S.TUNNEL, E.FAIL): S.DEAD,
    (S.IDLE, E.LOST): S.DEAD,
    (S.HEAD, E.LOST): S.DEAD,
    (S.BODY, E.LOST): S.DEAD,
    (S.TUNNEL, E.LOST): S.DEAD,
    (S.DEAD, E.LOST): S.DEAD,
}


def test_upstream_connection_moves() -> None:
    """An upstream connection moves idle → head → body → idle (or dead), head → tunnel, and to dead on a discard
    (idle only), a failure (not once dead) or its loss (any state); nothing else."""
    walk(upstream._MOVES, ConnectionState, ConnectionEvent, CONNECTION_MOVES)


def _connection() -> tuple[UpstreamPool, UpstreamProtocol, StringTransport]:
    pool = UpstreamPool(MemoryReactorClock())
    proto = UpstreamProtocol(pool, UpstreamAddress("127.0.0.1", 8000))
    transport = StringTransport()
    proto.makeConnection(transport)
    assert proto.state is ConnectionState.IDLE and proto.ready
    return pool, proto, transport


def test_upstream_connection_state_is_its_own() -> None:
    """Nothing outside the connection writes its state: it is read-only."""
    _, proto, _ = _connection()
    with pytest.raises(AttributeError):
        proto.state = ConnectionState.DEAD  # type: ignore[misc]


def test_the_pool_discards_through_the_connection() -> None:
    """The pool closes an idle connection it does not keep by asking it to discard itself: dead, closing."""
    pool, proto, transport = _connection()
    pool.release(proto)
    assert pool.idle_count(proto.address) == 1
    pool.close()
    assert proto.state is ConnectionState.DEAD and not proto.ready
    assert transport.disconnecting


def test_a_request_on_a_busy_connection_is_a_programming_error() -> None:
    """Sending a request on a connection that is not idle raises IllegalTransition (not an assert: also under -O)."""
    _, proto, _ = _connection()
    proto.sendRequest(b"GET", b"/", [], NO_BODY, None)  # type: ignore[arg-type]
    assert proto.state is ConnectionState.HEAD and not proto.ready
    with pytest.raises(IllegalTransition):
        proto.sendRequest(b"GET", b"/", [], NO_BODY, None)  # type: ignore[arg-type]


# -- the relay -------------------------------------------------------------------------------------------------------

R, V = RelayState, RelayEvent

RELAY_MOVES = {
    (R.CONNECTING, V.CONNECTED): R.SENDING,
    (R.SENDING, V.RETRY): R.CONNECTING,
    (R.SENDING, V.RESPONSE): R.STREAMING,
    (R.SENDING, V.SWITCHED): R.DONE,
    (R.STREAMING, V.COMPLETED): R.DONE,
    (R.CONNECTING, V.FAILED): R.DONE,
    (R.SENDING, V.FAILED): R.DONE,
    (R.STREAMING, V.FAILED): R.DONE,
    (R.CONNECTING, V.CANCELLED): R.DONE,
    (R.SENDING, V.CANCELLED): R.DONE,
    (R.STREAMING, V.CANCELLED): R.DONE,
}


def test_relay_moves() -> None:
    """A relay moves connecting → sending → streaming → done, sending back to connecting to retry, sending to done
    on a switch, and to done on a failure or a cancel from any state but done; nothing leaves done."""
    walk(exchange._MOVES, RelayState, RelayEvent, RELAY_MOVES)


def test_relay_state_is_read_only() -> None:
    """A relay's state is its own: a property with no setter."""
    state = exchange.Relay.state
    assert isinstance(state, property) and state.fset is None


# -- the client connection -------------------------------------------------------------------------------------------

P, C = Phase, PhaseEvent

CHANNEL_MOVES = {
    (P.IDLE, C.HEAD_BEGUN): P.HEAD,
    (P.IDLE, C.HEAD_WITH_BODY): P.BODY,
    (P.HEAD, C.HEAD_WITH_BODY): P.BODY,
    (P.IDLE, C.HEAD_WITHOUT_BODY): P.WAITING,
    (P.HEAD, C.HEAD_WITHOUT_BODY): P.WAITING,
    (P.BODY, C.BODY_ENDED): P.WAITING,
    (P.WAITING, C.ANSWERED): P.IDLE,
    (P.WAITING, C.SWITCHED): P.TUNNEL,
    (P.IDLE, C.CLOSE): P.CLOSED,
    (P.HEAD, C.CLOSE): P.CLOSED,
    (P.BODY, C.CLOSE): P.CLOSED,
    (P.WAITING, C.CLOSE): P.CLOSED,
    (P.CLOSED, C.CLOSE): P.CLOSED,
    (P.IDLE, C.LOST): P.CLOSED,
    (P.HEAD, C.LOST): P.CLOSED,
    (P.BODY, C.LOST): P.CLOSED,
    (P.WAITING, C.LOST): P.CLOSED,
    (P.TUNNEL, C.LOST): P.CLOSED,
    (P.CLOSED, C.LOST): P.CLOSED,
}


def test_client_connection_moves() -> None:
    """A client connection moves idle → head → body → waiting → idle (a whole head skips head, a bodiless request
    body), waiting → tunnel on a 101, to closed from any phase but tunnel, and to closed on its loss from any."""
    walk(channel._MOVES, Phase, PhaseEvent, CHANNEL_MOVES)


class Hello(Resource):
    isLeaf = True

    def render_POST(self, request: object) -> bytes:
        return b"hello"


def test_client_connection_phases_in_use() -> None:
    """A request walks its connection through head and body back to idle (answered, it waited only for the end of
    its body); a lost connection is closed."""
    site = ProxySite(Hello(), reactor=MemoryReactorClock())
    channel = cast(ProxyChannel, site.buildProtocol(IPv4Address("TCP", "10.0.0.1", 50000)))
    transport = StringTransport()
    channel.makeConnection(transport)
    assert channel.phase is Phase.IDLE
    channel.dataReceived(b"POST / HTTP/1.1\r\nHost: e\r\n")
    assert channel.phase is Phase.HEAD
    channel.dataReceived(b"Content-Length: 2\r\n\r\n")
    assert channel.phase is Phase.BODY
    channel.dataReceived(b"hi")
    assert channel.phase is Phase.IDLE
    assert transport.value().endswith(b"hello")
    channel.connectionLost(None)
    assert channel.phase is Phase.CLOSED


# -- an HTTP/2 stream's request body ----------------------------------------------------------------------------------

B, D = BodyState, BodyEvent

H2_BODY_MOVES = {
    (B.STREAMING, D.HOLD): B.HELD,
    (B.HELD, D.RELEASE): B.STREAMING,
    (B.STREAMING, D.END): B.ENDED,
    (B.STREAMING, D.DROP): B.DROPPED,
    (B.HELD, D.DROP): B.DROPPED,
}


def test_h2_body_moves() -> None:
    """A stream's body goes between streaming and held, ends from streaming (END_STREAM waits while the stream is
    held), is dropped from either, and never leaves ended or dropped."""
    walk(h2._MOVES, BodyState, BodyEvent, H2_BODY_MOVES)


# -- the chunked decoder ---------------------------------------------------------------------------------------------
#
# A plain Enum with no table (its moves are the grammar, one per branch of feed, on every chunk): walked here over
# every state and a kind of input each, for where it goes or that it refuses.

K = ChunkedState
REACH = {K.SIZE: b"", K.DATA: b"3\r\n", K.DATA_CRLF: b"3\r\nabc", K.TRAILER: b"0\r\n", K.DONE: b"0\r\n\r\n"}
INPUTS = {
    "size": b"3\r\n",
    "last size": b"0\r\n",
    "data": b"abc",
    "crlf": b"\r\n",
    "field": b"x: y\r\n",
    "lf": b"\n",
    "byte": b"z",
}
REFUSED = None
CHUNKED_MOVES = {
    K.SIZE: {
        "size": K.DATA,
        "last size": K.TRAILER,
        "data": K.SIZE,  # (a size line not yet complete)
        "crlf": REFUSED,  # an empty size
        "field": REFUSED,
        "lf": K.SIZE,  # (lines are judged whole)
        "byte": K.SIZE,
    },
    K.DATA: {  # 3 bytes of data to come
        "size": K.DATA_CRLF,
        "last size": K.DATA_CRLF,
        "data": K.DATA_CRLF,
        "crlf": K.DATA,
        "field": REFUSED,  # 3 bytes of data, then no CRLF
        "lf": K.DATA,
        "byte": K.DATA,
    },
    K.DATA_CRLF: dict.fromkeys(INPUTS, REFUSED) | {"crlf": K.SIZE},
    K.TRAILER: dict.fromkeys(INPUTS, K.TRAILER) | {"crlf": K.DONE},  # (trailer lines are dropped)
    K.DONE: dict.fromkeys(INPUTS, K.DONE),  # what follows is handed back
}


def test_chunked_decoder_moves() -> None:
    """The chunked decoder goes size → data → data-crlf → size, size → trailer → done on the last chunk, refuses what
    breaks the grammar, and hands back whatever follows once done."""
    assert set(CHUNKED_MOVES) == set(ChunkedState)
    for state, moves in CHUNKED_MOVES.items():
        assert set(moves) == set(INPUTS)
        for name, expected in moves.items():
            decoder = ChunkedDecoder(lambda data: None)
            decoder.feed(REACH[state])
            assert decoder.state is state
            if expected is REFUSED:
                with pytest.raises(FramingError):
                    decoder.feed(INPUTS[name])
                continue
            rest = decoder.feed(INPUTS[name])
            assert decoder.state is expected, (state, name)
            assert rest == (INPUTS[name] if state is K.DONE else b"" if expected is K.DONE else None), (state, name)
