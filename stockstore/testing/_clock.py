"""`FakeClock`: time that moves only when a test says so."""

from __future__ import annotations


class FakeClock:
    """Epoch seconds that move only when a test ticks them (cachetools' approach).

    Pass it as a store's ``clock=``; `tick` replaces sleeping, so lifetime tests are
    exact and fast::

        clock = FakeClock(time.time())
        store = MemoryStore(lifetime=10, clock=clock)
        clock.tick(11)  # every record put above has now expired
    """

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        """Move the clock forward by *seconds*."""
        self.now += seconds
