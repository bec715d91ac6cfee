"""WAL file names and LSNs: which segment holds an LSN, and which timeline a segment belongs to."""

from __future__ import annotations

import re

from trading_ops.pgtools import parse_lsn

SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")


def segments_per_id(segment_size: int) -> int:
    return 0x100000000 // segment_size


def segment_number(name: str, segment_size: int) -> int:
    match = SEGMENT_RE.match(name)
    if not match:
        raise ValueError(f"{name!r} is not a WAL segment name")
    return int(match[2], 16) * segments_per_id(segment_size) + int(match[3], 16)


def segment_order(name: str, segment_size: int) -> tuple[int, int]:
    """Sort key of segments across timelines: by position in the WAL stream, then timeline."""
    return segment_number(name, segment_size), segment_timeline(name)


def segment_timeline(name: str) -> int:
    return int(name[:8], 16)


def name_of(timeline: int, number: int, segment_size: int) -> str:
    per_id = segments_per_id(segment_size)
    return f"{timeline:08X}{number // per_id:08X}{number % per_id:08X}"


def segment_name(timeline: int, lsn: str, segment_size: int) -> str:
    """The WAL segment that contains `lsn` on `timeline`, like pg_walfile_name()."""
    return name_of(timeline, parse_lsn(lsn) // segment_size, segment_size)


def parse_history(text: str) -> list[tuple[int, int]]:
    """A timeline history file as (parent timeline, LSN where it ended), oldest first."""
    switches = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not line.startswith("#") and fields[0].isdigit():
            switches.append((int(fields[0]), parse_lsn(fields[1])))
    return switches


def expected_timelines(history: list[tuple[int, int]], current: int, segment_size: int) -> list[tuple[int, int]]:
    """(timeline, first segment number) for each timeline of the history, oldest first.

    The segment holding a switch point is replayed from the newer timeline, as recovery does.
    """
    begins = [(history[0][0] if history else current, 0)]
    for index, (_, end_lsn) in enumerate(history):
        child = history[index + 1][0] if index + 1 < len(history) else current
        begins.append((child, end_lsn // segment_size))
    return begins


def timeline_of_segment(begins: list[tuple[int, int]], number: int) -> int:
    timeline = begins[0][0]
    for candidate, first in begins:
        if first <= number:
            timeline = candidate
    return timeline
