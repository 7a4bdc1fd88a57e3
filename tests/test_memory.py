import gc
import weakref

import pytest

from components import memory


class _Node:
    def __init__(self):
        self.partner = None


def _cycle_with_weakref():
    first, second = _Node(), _Node()
    first.partner, second.partner = second, first
    return weakref.ref(first)


def test_release_collects_reference_cycles():
    gc.disable()
    try:
        alive = _cycle_with_weakref()
        assert alive() is not None
        memory.release_unused_memory()
        assert alive() is None
    finally:
        gc.enable()


def test_malloc_trim_found_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is a glibc function")
    assert memory._MALLOC_TRIM is not None


def test_releases_memory_after_return(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "release_unused_memory", lambda: calls.append("released"))

    @memory.releases_memory
    def do(value):
        calls.append("ran")
        return value * 2

    assert do(21) == 42
    assert calls == ["ran", "released"]


def test_releases_memory_after_raise(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "release_unused_memory", lambda: calls.append("released"))

    @memory.releases_memory
    def do():
        raise RuntimeError("component failed")

    with pytest.raises(RuntimeError, match="component failed"):
        do()
    assert calls == ["released"]


def test_executors_release_memory():
    from components import ingest, statistics_gen, transform_executor

    wrapper_code = memory.releases_memory(lambda: None).__code__
    for executor in (ingest.Executor, statistics_gen.Executor, transform_executor.Executor):
        assert executor.Do.__code__ is wrapper_code, executor.__module__


def test_freeze_exempts_existing_objects():
    node = _Node()
    try:
        memory.freeze_startup_objects()
        assert gc.get_freeze_count() > 0
        assert not any(obj is node for obj in gc.get_objects())
    finally:
        gc.unfreeze()
    assert any(obj is node for obj in gc.get_objects())
