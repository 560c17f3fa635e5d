"""The stand-in clock: scaled or manual time that every server-side wait runs on."""

from __future__ import annotations

import threading

import pytest

from datris_provider.testing import StandInClock, StandInDatris


def test_a_manual_clock_moves_only_when_advanced() -> None:
    clock = StandInClock(manual=True, start=1_000.0)
    assert (clock.now(), clock.now_ms(), clock.mode) == (1_000.0, 1_000_000, "manual")
    assert clock.real_seconds(5) is None
    assert clock.advance(2.5) == 1_002.5
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)


def test_a_scaled_clock_converts_stand_in_seconds_to_real_ones() -> None:
    clock = StandInClock(50, start=0.0)
    assert clock.real_seconds(5) == 0.1
    assert clock.now() >= 0.0
    clock.pause()
    frozen = clock.now()
    assert clock.now() == frozen and clock.manual
    clock.resume(time_scale=10)
    assert (clock.mode, clock.time_scale) == ("scaled", 10.0)
    with pytest.raises(ValueError, match="time_scale must be a positive number"):
        StandInClock(0)


def test_a_wait_on_a_manual_clock_ends_when_another_thread_advances_it() -> None:
    clock = StandInClock(manual=True, start=0.0)
    ended = threading.Event()
    waiter = threading.Thread(target=lambda: ended.set() if clock.sleep(30) else None)
    waiter.start()
    clock.advance(29)
    assert not ended.wait(0.05)
    clock.advance(1)
    waiter.join(timeout=10)
    assert ended.is_set()


def test_a_wait_ends_early_when_told_to_stop() -> None:
    clock = StandInClock(manual=True, start=0.0)
    assert clock.wait_until(10, stop=lambda: True) is False


def test_the_facade_switches_and_restores_its_clock() -> None:
    with StandInDatris(time_scale=20) as datris:
        assert (datris.clock.mode, datris.clock.time_scale) == ("scaled", 20.0)
        datris.clock.pause()
        datris.reset_state()
        assert datris.clock.mode == "scaled"  # back to how it was created
    with pytest.raises(ValueError, match="clock must be one of"):
        StandInDatris(clock="sundial")


def test_advance_clock_when_moves_time_once_the_condition_holds() -> None:
    with StandInDatris(clock="manual") as datris:
        flag = threading.Event()
        start = datris.clock.now()
        datris.advance_clock_when(flag.is_set, 42)
        assert datris.clock.now() == start
        flag.set()
        datris.wait_for(lambda: datris.clock.now() == start + 42)
        with pytest.raises(TimeoutError, match=r"did not hold within 0\.05 s"):
            datris.wait_for(lambda: False, timeout=0.05)


def test_hold_clock_until_stops_time_then_lets_it_run_once_the_condition_holds() -> None:
    with StandInDatris() as datris:
        flag = threading.Event()
        datris.hold_clock_until(flag.is_set)
        assert datris.clock.mode == "manual"
        held_at = datris.clock.now()
        assert datris.clock.now() == held_at
        flag.set()
        datris.wait_for(lambda: datris.clock.mode == "scaled" and datris.clock.now() > held_at)


def test_a_clock_watch_left_from_before_a_reset_never_moves_the_clock_after_it() -> None:
    with StandInDatris() as datris:
        flag = threading.Event()
        datris.hold_clock_until(flag.is_set)
        datris.reset_state()  # the next test on a shared stand-in begins
        datris.clock.pause()
        paused_at = datris.clock.now()
        flag.set()
        with pytest.raises(TimeoutError):
            datris.wait_for(lambda: datris.clock.mode == "scaled", timeout=0.3)
        assert datris.clock.now() == paused_at
