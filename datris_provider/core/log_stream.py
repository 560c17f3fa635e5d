"""Turning Datris output into log lines: the script's log string and the pipeline events."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from datris_provider.client.models import PipelineEvent


def iter_lines(text: str | None) -> Iterator[str]:
    """Yield the lines of ``text`` one at a time, without building a list of them.

    A run's ``logs`` can be megabytes long; this holds one line at a time beside the string itself.
    """
    if not text:
        return
    start = 0
    length = len(text)
    while start < length:
        end = text.find("\n", start)
        if end == -1:
            end = length
        line = text[start:end].rstrip("\r")
        if line:
            yield line
        start = end + 1


def describe_event(event: PipelineEvent) -> str:
    """One log line for a pipeline event: where it came from and what it says."""
    return f"[{event.pipeline or 'pipeline'}] {event.process_name} {event.state}: {event.description}"


class EventCursor:
    """Remembers which events were already streamed, so each is printed exactly once.

    Event ids are all 0 and events written in the same millisecond may come back in another order,
    so events are counted by their content rather than by position. The state is plain JSON, so a
    trigger can hand it back to the operator.
    """

    def __init__(self, seen: Iterable[list[object]] | None = None) -> None:
        self._seen: Counter[tuple[object, ...]] = Counter(tuple(item) for item in (seen or ()))

    def new_events(self, events: Iterable[PipelineEvent]) -> list[PipelineEvent]:
        """The events not streamed yet, in server order, now marked as streamed."""
        in_answer: Counter[tuple[object, ...]] = Counter()
        fresh = []
        for event in events:
            identity: tuple[object, ...] = event.identity
            in_answer[identity] += 1
            if in_answer[identity] > self._seen[identity]:
                fresh.append(event)
        for identity, count in in_answer.items():
            if count > self._seen[identity]:
                self._seen[identity] = count
        return fresh

    def to_json(self) -> list[list[object]]:
        return [list(identity) for identity, count in self._seen.items() for _ in range(count)]
