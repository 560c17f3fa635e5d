"""Quartz cron expressions (6 or 7 fields: ``sec min hour day-of-month month day-of-week [year]``).

Enough of Quartz for tap schedules: ``*``, ``?``, lists, ranges, steps and month/day names. The
special ``L``, ``W`` and ``#`` forms are refused with a clear error; a year field is accepted and
not checked. Times are UTC, like the server's default.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

__all__ = ["CronExpression", "next_fire_ms"]

_MONTHS = {
    name: index
    for index, name in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], start=1
    )
}
# Quartz numbers the days of the week 1 (SUN) to 7 (SAT).
_DAYS = {name: index for index, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], start=1)}
# How far ahead a next fire time is looked for (an expression may never fire, e.g. 30 FEB).
_SEARCH_DAYS = 366 * 5


def _parse_field(
    text: str, low: int, high: int, names: dict[str, int] | None, expression: str
) -> frozenset[int] | None:
    """The values a field allows; None for ``*`` or ``?`` (anything)."""
    if text in ("*", "?"):
        return None
    if any(mark in text for mark in ("L", "W", "#")) and not (names and text.upper() in names):
        raise ValueError(f"cron {expression!r}: the stand-in does not model Quartz's L, W or # forms ({text!r})")
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base in ("*", "?"):
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _value(first, names, expression), _value(last, names, expression)
        else:
            start = _value(base, names, expression)
            end = high if step_text else start
        if not (low <= start <= high and low <= end <= high) or step < 1:
            raise ValueError(f"cron {expression!r}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _value(text: str, names: dict[str, int] | None, expression: str) -> int:
    if names and text.upper() in names:
        return names[text.upper()]
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"cron {expression!r}: {text!r} is not a number") from None


@dataclass(frozen=True)
class CronExpression:
    """A parsed Quartz cron expression."""

    seconds: frozenset[int] | None
    minutes: frozenset[int] | None
    hours: frozenset[int] | None
    days_of_month: frozenset[int] | None
    months: frozenset[int] | None
    days_of_week: frozenset[int] | None

    @classmethod
    def parse(cls, expression: str) -> CronExpression:
        """Parse ``sec min hour dom month dow [year]``; ValueError says what is wrong."""
        fields = expression.split()
        if len(fields) not in (6, 7):
            raise ValueError(
                f"cron {expression!r} needs 6 fields (Quartz: sec min hour day-of-month month day-of-week), "
                f"not {len(fields)}"
            )
        return cls(
            seconds=_parse_field(fields[0], 0, 59, None, expression),
            minutes=_parse_field(fields[1], 0, 59, None, expression),
            hours=_parse_field(fields[2], 0, 23, None, expression),
            days_of_month=_parse_field(fields[3], 1, 31, None, expression),
            months=_parse_field(fields[4], 1, 12, _MONTHS, expression),
            days_of_week=_parse_field(fields[5], 1, 7, _DAYS, expression),
        )

    def _day_matches(self, day: datetime) -> bool:
        quartz_weekday = (day.weekday() + 1) % 7 + 1
        return (
            (self.months is None or day.month in self.months)
            and (self.days_of_month is None or day.day in self.days_of_month)
            and (self.days_of_week is None or quartz_weekday in self.days_of_week)
        )

    def next_after(self, moment: datetime) -> datetime | None:
        """The first fire time strictly after ``moment`` (UTC), or None within five years."""
        moment = moment.astimezone(timezone.utc).replace(microsecond=0)
        hours = sorted(self.hours) if self.hours is not None else range(24)
        minutes = sorted(self.minutes) if self.minutes is not None else range(60)
        seconds = sorted(self.seconds) if self.seconds is not None else range(60)
        day = moment.replace(hour=0, minute=0, second=0)
        for _ in range(_SEARCH_DAYS):
            if self._day_matches(day):
                for hour in hours:
                    if day.date() == moment.date() and hour < moment.hour:
                        continue
                    for minute in minutes:
                        for second in seconds:
                            candidate = day.replace(hour=hour, minute=minute, second=second)
                            if candidate > moment:
                                return candidate
            day += timedelta(days=1)
        return None


def next_fire_ms(expression: str, after_ms: int) -> int | None:
    """The next fire time (epoch ms) of a Quartz expression strictly after ``after_ms``."""
    moment = datetime.fromtimestamp(after_ms / 1000, tz=timezone.utc)
    fire = CronExpression.parse(expression).next_after(moment)
    return None if fire is None else int(fire.timestamp() * 1000)
