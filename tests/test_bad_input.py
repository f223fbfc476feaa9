"""Interruptions and memory exhaustion while a value is being stored.

KeyboardInterrupt or MemoryError raised while a value is pickled (outside
the table lock) must leave the table consistent: the items before it are
stored, as LocMemCache's per-item loop stores them, and nothing else changes.
(Allocation failures inside the table itself are covered by the C tests'
failing allocator: csrc/tests/test_table.c.)
"""

from __future__ import annotations

import pytest


class Interrupts:
    def __init__(self, exc: type[BaseException]) -> None:
        self.exc = exc

    def __reduce__(self):
        raise self.exc()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, MemoryError])
def test_interrupted_set_many_keeps_earlier_items(make_cache, make_ref, exc):
    results = []
    for cache in (make_cache(), make_ref()):
        cache.set_many({"a": "old-a", "b": "old-b", "c": "old-c", "d": "old-d"})
        with pytest.raises(exc):
            cache.set_many(
                {"a": 1, "b": [2], "c": Interrupts(exc), "d": 4, "e": 5}, 100
            )
        results.append(
            (cache.get_many(["a", "b", "c", "d", "e"]), sorted(cache._cache))
        )
    assert results[0] == results[1]
    assert results[0][0] == {"a": 1, "b": [2], "c": "old-c", "d": "old-d"}


@pytest.mark.parametrize("exc", [KeyboardInterrupt, MemoryError])
def test_interrupted_set_changes_nothing(make_cache, exc):
    cache = make_cache()
    cache.set("k", {"v": 1})
    for op in (cache.set, cache.add):
        with pytest.raises(exc):
            op("k" if op is cache.set else "new", Interrupts(exc))
    assert cache.get("k") == {"v": 1}
    assert "new" not in cache
    if hasattr(cache, "_fc"):
        assert cache._fc.store.check() == 0


class Num:
    """Pickles while small; interrupted when pickled after an incr."""

    def __init__(self, n):
        self.n = n

    def __add__(self, other):
        return Num(self.n + other)

    def __reduce__(self):
        if self.n > 1:
            raise KeyboardInterrupt
        return (Num, (self.n,))


def test_interrupted_incr_leaves_the_value(make_cache):
    cache = make_cache()
    cache.set("n", Num(1))
    with pytest.raises(KeyboardInterrupt):
        cache.incr("n")
    assert cache.get("n").n == 1
