from __future__ import annotations

from datris_provider.client.models import PipelineEvent
from datris_provider.core.log_stream import EventCursor, describe_event, iter_lines


def _event(description: str, epoch: int = 1, process: str = "JobRunner", token: str = "t1") -> PipelineEvent:
    return PipelineEvent(token, "orders", process, "begin", "info", description, epoch)


def test_iter_lines_splits_and_drops_blank_lines():
    assert list(iter_lines("a\r\nb\n\nc")) == ["a", "b", "c"]
    assert list(iter_lines(None)) == []
    assert list(iter_lines("")) == []


def test_iter_lines_streams_a_large_log_lazily():
    text = "x" * 100 + "\n"
    lines = iter_lines(text * 100_000)  # 10 MB
    assert next(lines) == "x" * 100
    assert sum(1 for _ in lines) == 99_999


def test_cursor_returns_each_event_once_as_the_list_grows():
    cursor = EventCursor()
    first, second, third = _event("a", 1), _event("b", 2), _event("c", 3)
    assert cursor.new_events([first]) == [first]
    assert cursor.new_events([first, second]) == [second]
    assert cursor.new_events([first, second, third]) == [third]
    assert cursor.new_events([first, second, third]) == []


def test_cursor_is_not_fooled_by_reordering_within_a_millisecond():
    cursor = EventCursor()
    a, b = _event("a", 5), _event("b", 5)
    assert cursor.new_events([a, b]) == [a, b]
    assert cursor.new_events([b, a]) == []


def test_identical_events_twice_are_both_streamed():
    cursor = EventCursor()
    a = _event("same", 9)
    assert cursor.new_events([a]) == [a]
    assert cursor.new_events([a, a]) == [a]


def test_cursor_state_round_trips_through_json():
    cursor = EventCursor()
    cursor.new_events([_event("a", 1), _event("b", 2)])
    restored = EventCursor(cursor.to_json())
    assert restored.new_events([_event("a", 1), _event("b", 2), _event("c", 3)]) == [_event("c", 3)]


def test_event_line_names_pipeline_process_and_text():
    assert describe_event(_event("Process started")) == "[orders] JobRunner begin: Process started"
