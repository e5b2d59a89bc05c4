"""
Deadlines: the timer slack every lazy timer allows.
"""

from __future__ import annotations

# A deadline DelayedCall that fires this close to its deadline counts as expired (no re-arming for a few
# microseconds of floating-point remainder).
TIMER_SLACK = 0.001
