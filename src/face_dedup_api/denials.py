"""How many refusals of callers without a valid identity are audited one by one.

Every refused request is audited, but anyone who can reach the server can be refused: in the
review one client without a token wrote 2,073 audit entries in 5 s (about 1.5 million an hour),
growing the write-once audit log without bound and burying what auditors look for. Refusals of
anonymous callers are therefore recorded one by one up to a budget per minute; beyond it they
are counted, and the count is audited as one entry when the next minute's first refusal comes.
Refusals of known callers (403, another tenant's 404) are always recorded one by one: they are
accountable, and what an auditor most needs to see."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

PER_MINUTE = 60


class AnonymousDenials:
    def __init__(self, per_minute: int = PER_MINUTE, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start: float | None = None
        self._recorded = 0
        self._unrecorded = 0

    def take(self) -> tuple[bool, int]:
        """(whether to audit this refusal, how many earlier ones went unrecorded and must now be
        audited as a count; 0 when none)."""
        with self._lock:
            now = self._clock()
            carried = 0
            if self._window_start is None or now - self._window_start >= 60:
                carried, self._unrecorded = self._unrecorded, 0
                self._window_start, self._recorded = now, 0
            if self._recorded < self._per_minute:
                self._recorded += 1
                return True, carried
            self._unrecorded += 1
            return False, carried
