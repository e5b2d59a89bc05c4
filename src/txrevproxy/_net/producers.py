"""
A push producer made of three callables.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


@implementer(IPushProducer)
class CallbackProducer:
    """
    Adapts three callables to ``IPushProducer``; the relay is the producer of two different streams.
    """

    def __init__(self, pause: Callable[[], None], resume: Callable[[], None], stop: Callable[[], None]) -> None:
        self.pauseProducing = pause
        self.resumeProducing = resume
        self.stopProducing = stop
