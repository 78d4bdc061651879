"""A bounded, thread-safe cache for what a repeated call would otherwise rebuild.

numba's executions, the cuda backend's prepared launches and the OpenCV stand-in's
decisions cost microseconds to milliseconds to build, and a repeated call asks for the
same one every time. Each keeps at most a fixed number of entries, least recently used
dropped first.

Plans hold arrays and do not hash, and :func:`gpuconv._plan.make_stack_plan` hands
repeated calls the same plan object; so a value built from a plan is keyed by
``id(plan)`` with the plan as the entry's ``owner``. The entry keeps its owner alive and
is returned only for that very object, so an id reused after a plan is gone never finds
another plan's value.
"""

from __future__ import annotations

import collections
import threading

_MISSING = object()


class BoundedCache:
    """At most ``size`` entries; :meth:`get` builds a missing one (outside the lock).

    Examples
    --------
    >>> cache = BoundedCache(2)
    >>> cache.get("a", lambda: 1), cache.get("a", lambda: 2)
    (1, 1)
    >>> _ = cache.get("b", lambda: 3), cache.get("c", lambda: 4)
    >>> len(cache), cache.get("a", lambda: 5)
    (2, 5)
    """

    def __init__(self, size: int):
        self.size = size
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, make, owner=None):
        """The value stored under ``key`` (for ``owner``, if given), else ``make()``, stored.

        Two threads missing the same key both build it; the last one's value is kept,
        and both are equal, so neither caller can tell.
        """
        # A hit takes no lock: each OrderedDict call is atomic under the GIL, and an entry
        # dropped by another thread between the two only makes this call a miss.
        entry = self._entries.get(key, _MISSING)
        if entry is not _MISSING and entry[0] is owner:
            try:
                self._entries.move_to_end(key)
            except KeyError:
                pass
            else:
                return entry[1]
        value = make()
        with self._lock:
            self._entries[key] = (owner, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value

    def find(self, key, owner=None):
        """The value stored under ``key`` (for ``owner``), or None; nothing is made."""
        entry = self._entries.get(key, _MISSING)
        if entry is _MISSING or entry[0] is not owner:
            return None
        return entry[1]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
