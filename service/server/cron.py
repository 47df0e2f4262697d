"""Cron lines with time zones: validation and fire times (croniter + zoneinfo).

A schedule is a standard five-field cron line (``minute hour day-of-month month
day-of-week``, e.g. ``30 2 * * *`` for 02:30 every night) read in an IANA time zone
(``Europe/Paris``): "02:30" means 02:30 local time, across daylight-saving changes. Fire
times are returned as aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from envs.errors import SedtuneInputError


def _zone(tz: str, field: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise SedtuneInputError(f"{field}: unknown IANA time zone {tz!r} (e.g. 'UTC', 'Europe/Paris')") \
            from None


@dataclass(frozen=True)
class CronSchedule:
    """A validated cron line in a time zone.

    Args:
        expr: Five-field cron line.
        tz: IANA time zone name.
    """

    expr: str
    tz: str

    @classmethod
    def parse(cls, expr: str, tz: str, field: str = "cron", tz_field: str = "timezone") -> CronSchedule:
        """Validate a cron line and a time zone.

        Args:
            expr: Five-field cron line.
            tz: IANA time zone.
            field: Field name of ``expr`` in error messages.
            tz_field: Field name of ``tz`` in error messages.

        Raises:
            SedtuneInputError: Not five fields, a field croniter cannot read, an unknown zone.
        """
        text = " ".join(expr.split())
        if len(text.split(" ")) != 5:
            raise SedtuneInputError(
                f"{field}: a cron line has 5 fields (minute hour day-of-month month day-of-week), "
                f"but got {len(text.split()) if text else 0} in {expr!r}"
            )
        if not croniter.is_valid(text):
            raise SedtuneInputError(f"{field}: not a valid cron line: {expr!r}")
        _zone(tz, tz_field)
        try:  # is_valid accepts some lines that cannot fire (e.g. 30 February)
            croniter(text, datetime.now(UTC)).get_next(datetime)
        except Exception as e:
            raise SedtuneInputError(f"{field}: the cron line {expr!r} never fires ({e})") from None
        return cls(text, tz)

    def next_after(self, when: datetime) -> datetime:
        """The first fire time strictly after ``when``.

        Args:
            when: An aware datetime.

        Returns:
            Aware UTC datetime.
        """
        local = when.astimezone(_zone(self.tz, "timezone"))
        nxt: datetime = croniter(self.expr, local).get_next(datetime)
        return nxt.astimezone(UTC)

    def last_at_or_before(self, when: datetime) -> datetime:
        """The latest fire time ``t <= when`` (aware UTC)."""
        local = (when + _EPSILON).astimezone(_zone(self.tz, "timezone"))
        prev: datetime = croniter(self.expr, local).get_prev(datetime)
        return prev.astimezone(UTC)

    def fires_between(self, start: datetime, end: datetime, limit: int = 10_000) -> Iterator[datetime]:
        """Fire times ``t`` with ``start <= t <= end`` (aware UTC), at most ``limit`` of them.

        Args:
            start: First instant considered (inclusive).
            end: Last instant considered (inclusive).
            limit: Stop after this many.
        """
        t = self.next_after(start - _EPSILON)
        n = 0
        while t <= end and n < limit:
            yield t
            n += 1
            t = self.next_after(t)


_EPSILON = datetime(2000, 1, 1, 0, 0, 1) - datetime(2000, 1, 1)
