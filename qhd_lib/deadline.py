"""A deadline for long work: stop, saved, before a unit of work would run past it.

A GPU comes in slots of minutes (issue 19), and a run of the paper's protocol takes longer than
one command may. Training and sampling therefore work in units that can be resumed exactly (a
logged block of train steps, a chunk of reverse-diffusion steps) and, before starting the next
unit, ask :meth:`Deadline.allows` whether it fits in the time left, judged by what the last unit
took. When it does not, they save their state and raise :class:`DeadlineReached`; the next
invocation resumes from there to the same numbers as a run that never stopped.
"""

from __future__ import annotations

import time


class DeadlineReached(Exception):
    """The work stopped before its deadline with everything done so far saved; rerun to resume."""


class Deadline:
    """The instant ``seconds`` from now (``time.monotonic``); None means no deadline at all."""

    def __init__(self, seconds: float | None) -> None:
        self.at = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left (infinite without a deadline)."""
        return float("inf") if self.at is None else self.at - time.monotonic()

    def allows(self, seconds: float) -> bool:
        """Whether work expected to take ``seconds`` ends before the deadline."""
        return seconds <= self.left()

    def check(self, seconds: float, what: str) -> None:
        """Raise :class:`DeadlineReached` (naming ``what`` was saved) unless ``seconds`` fit."""
        if not self.allows(seconds):
            raise DeadlineReached(
                f"stopped before the deadline ({self.left():.1f} s left, the next unit takes about "
                f"{seconds:.1f} s); {what} is saved: rerun the same command to resume"
            )


NO_DEADLINE = Deadline(None)
