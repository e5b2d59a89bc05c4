"""
The one deadline class on a ``Clock``: firing once at the due time, lazy re-arming when moved later, re-arming when
moved earlier, clearing and cancelling, the slack, a callback that sets it again, and no ``DelayedCall`` left over.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from txrevproxy._net.deadline import TIMER_SLACK, Deadline


def make(*args: object) -> tuple[Deadline, Clock, list[tuple[float, tuple[object, ...]]]]:
    clock = Clock()
    fired: list[tuple[float, tuple[object, ...]]] = []

    def expired(*given: object) -> None:
        fired.append((clock.seconds(), given))

    return Deadline(clock, expired, *args), clock, fired


def test_fires_once_at_the_due_time() -> None:
    """A deadline set for 10 s calls its callback once at 10 s, then is no longer set and leaves no DelayedCall."""
    deadline, clock, fired = make()
    deadline.set(10)
    assert deadline.active and deadline.due == 10 and deadline.remaining() == 10
    clock.advance(9.9)
    assert fired == [] and deadline.remaining() == 10 - 9.9
    clock.advance(0.1)
    assert fired == [(10, ())]
    assert not deadline.active and deadline.due is None and deadline.remaining() is None
    assert clock.getDelayedCalls() == []
    clock.advance(100)
    assert len(fired) == 1


def test_unset_deadline_has_no_timer() -> None:
    """A deadline never set arms no DelayedCall and never fires."""
    deadline, clock, fired = make()
    assert not deadline.active and clock.getDelayedCalls() == []
    clock.advance(1000)
    assert fired == []


def test_callback_gets_the_arguments() -> None:
    """The callback is called with the arguments given with it, like callLater's."""
    deadline, clock, fired = make("a", 2)
    deadline.set(1)
    clock.advance(1)
    assert fired == [(1, ("a", 2))]


def test_moved_later_stores_only_and_rearms_when_it_fires() -> None:
    """Moving the deadline later touches no timer: the one DelayedCall fires at the old time, re-arms itself for
    the remainder, and the callback is called at the new time."""
    deadline, clock, fired = make()
    deadline.set(10)
    [call] = clock.getDelayedCalls()
    for _ in range(3):
        clock.advance(3)
        deadline.set(10)
        assert clock.getDelayedCalls() == [call] and call.getTime() == 10
    assert deadline.due == 19
    clock.advance(1)  # 10: early, re-armed for the 9 s left
    [again] = clock.getDelayedCalls()
    assert fired == [] and again.getTime() == 19
    clock.advance(8.9)
    assert fired == []
    clock.advance(0.1)
    assert fired == [(19, ())] and clock.getDelayedCalls() == []


def test_moved_earlier_fires_earlier() -> None:
    """Moving the deadline earlier than the pending DelayedCall moves that call (still only one)."""
    deadline, clock, fired = make()
    deadline.set(60)
    clock.advance(1)
    deadline.set(5)
    [call] = clock.getDelayedCalls()
    assert call.getTime() == 6
    clock.advance(5)
    assert fired == [(6, ())] and clock.getDelayedCalls() == []


def test_set_at_an_absolute_time() -> None:
    """set_at takes a time on the clock; one in the past fires at the next turn."""
    deadline, clock, fired = make()
    clock.advance(5)
    deadline.set_at(8)
    assert deadline.remaining() == 3
    clock.advance(3)
    assert fired == [(8, ())]
    deadline.set_at(2)
    clock.advance(0)
    assert fired == [(8, ()), (8, ())] and clock.getDelayedCalls() == []


def test_set_at_later_and_earlier() -> None:
    """set_at moved later re-arms lazily, moved earlier moves the pending call."""
    deadline, clock, fired = make()
    deadline.set_at(10)
    [call] = clock.getDelayedCalls()
    deadline.set_at(20)
    assert clock.getDelayedCalls() == [call] and call.getTime() == 10
    deadline.set_at(4)
    assert clock.getDelayedCalls() == [call] and call.getTime() == 4
    clock.advance(4)
    assert fired == [(4, ())]


def test_cancel_leaves_no_timer() -> None:
    """Cancelling unsets the deadline and cancels its DelayedCall: nothing fires, nothing is left."""
    deadline, clock, fired = make()
    deadline.set(10)
    [call] = clock.getDelayedCalls()
    deadline.cancel()
    assert not deadline.active and clock.getDelayedCalls() == [] and not call.active()
    clock.advance(100)
    assert fired == []
    deadline.cancel()  # (again: nothing to do)
    assert clock.getDelayedCalls() == []


def test_cancel_then_set_arms_a_new_timer() -> None:
    """A deadline set again after a cancel arms a fresh DelayedCall for the new time."""
    deadline, clock, fired = make()
    deadline.set(10)
    deadline.cancel()
    clock.advance(5)
    deadline.set(10)
    [call] = clock.getDelayedCalls()
    assert call.getTime() == 15
    clock.advance(10)
    assert fired == [(15, ())]


def test_clear_lets_the_timer_lapse() -> None:
    """Clearing unsets the deadline without touching its DelayedCall, which lapses when it fires, calling nothing."""
    deadline, clock, fired = make()
    deadline.set(10)
    [call] = clock.getDelayedCalls()
    deadline.clear()
    assert not deadline.active and clock.getDelayedCalls() == [call] and call.active()
    clock.advance(10)
    assert fired == [] and clock.getDelayedCalls() == []


def test_set_after_clear_reuses_the_pending_timer() -> None:
    """A deadline cleared then set again for later reuses the pending DelayedCall (re-armed when it fires)."""
    deadline, clock, fired = make()
    deadline.set(10)
    [call] = clock.getDelayedCalls()
    clock.advance(2)
    deadline.clear()
    deadline.set(10)
    assert clock.getDelayedCalls() == [call]
    clock.advance(8)
    assert fired == []
    clock.advance(2)
    assert fired == [(12, ())] and clock.getDelayedCalls() == []


def test_set_after_clear_earlier_moves_the_pending_timer() -> None:
    """A deadline cleared then set for sooner than its lapsing DelayedCall moves that call."""
    deadline, clock, fired = make()
    deadline.set(60)
    deadline.clear()
    deadline.set(5)
    [call] = clock.getDelayedCalls()
    assert call.getTime() == 5
    clock.advance(5)
    assert fired == [(5, ())]


def test_cancel_after_clear_cancels_the_lapsing_timer() -> None:
    """Cancelling a cleared deadline still cancels the DelayedCall left to lapse."""
    deadline, clock, _ = make()
    deadline.set(10)
    deadline.clear()
    deadline.cancel()
    assert clock.getDelayedCalls() == []


def test_within_the_slack_counts_as_due() -> None:
    """A DelayedCall firing less than TIMER_SLACK before the due time calls the callback instead of re-arming."""
    deadline, clock, fired = make()
    deadline.set(10)
    clock.advance(1)
    deadline.set(9 + TIMER_SLACK / 2)  # due at 10 + slack/2: the call at 10 is close enough
    clock.advance(9)
    assert fired == [(10, ())] and clock.getDelayedCalls() == []


def test_beyond_the_slack_rearms() -> None:
    """A DelayedCall firing more than TIMER_SLACK before the due time re-arms for the remainder."""
    deadline, clock, fired = make()
    deadline.set(10)
    clock.advance(1)
    deadline.set(9 + 2 * TIMER_SLACK)
    clock.advance(9)
    assert fired == []
    [call] = clock.getDelayedCalls()
    assert abs(call.getTime() - (10 + 2 * TIMER_SLACK)) < 1e-9
    clock.advance(2 * TIMER_SLACK)
    assert len(fired) == 1 and clock.getDelayedCalls() == []


def test_callback_may_set_the_deadline_again() -> None:
    """A callback that sets its deadline again gets called again at the new time (one DelayedCall at a time)."""
    clock = Clock()
    times: list[float] = []

    def expired() -> None:
        times.append(clock.seconds())
        if len(times) < 3:
            deadline.set(5)

    deadline = Deadline(clock, expired)
    deadline.set(5)
    for _ in range(4):
        clock.advance(5)
        assert len(clock.getDelayedCalls()) <= 1
    assert times == [5, 10, 15] and not deadline.active and clock.getDelayedCalls() == []


def test_callback_may_cancel_or_set_earlier() -> None:
    """A callback that sets its deadline at once and then cancels it leaves nothing pending."""
    clock = Clock()
    calls: list[float] = []

    def expired() -> None:
        calls.append(clock.seconds())
        deadline.set(1)
        deadline.cancel()

    deadline = Deadline(clock, expired)
    deadline.set(2)
    clock.advance(2)
    assert calls == [2] and clock.getDelayedCalls() == [] and not deadline.active


def test_the_timer_bears_the_callback_name() -> None:
    """The pending DelayedCall reads as its callback (getDelayedCalls, a dirty reactor report)."""
    clock = Clock()

    class Owner:
        def _checkSomething(self) -> None:
            pass

    deadline = Deadline(clock, Owner()._checkSomething)
    deadline.set(1)
    [call] = clock.getDelayedCalls()
    assert call.func.__name__ == "_checkSomething"  # type: ignore[attr-defined]
    assert "Owner._checkSomething()" in repr(call)
    assert "Owner._checkSomething" in repr(deadline)


def test_a_deadline_moved_on_every_step_costs_no_timer_per_move() -> None:
    """A 10 s deadline moved later every 10 ms for 15 s has armed two DelayedCalls (the first, and its re-arm when it
    fired at 10 s), not one per move."""
    deadline, clock, fired = make()
    made = []
    call_later = clock.callLater

    def counting(delay: float, f: object, *a: object, **kw: object) -> object:
        made.append(delay)
        return call_later(delay, f, *a, **kw)  # type: ignore[arg-type]

    clock.callLater = counting  # type: ignore[assignment]
    for _ in range(1500):
        deadline.set(10)
        clock.advance(0.01)
    assert len(made) == 2 and fired == [] and len(clock.getDelayedCalls()) == 1
