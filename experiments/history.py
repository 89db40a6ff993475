"""History import: turn logged decision rows (CSV or JSON lines) into validated records.

One row is one logged decision. Columns:

- `subject_id`, `arm` (an arm key or an arm's name, case-insensitive): required
  (data without subject ids may ask for one generated per line: `line-<n>`);
- `decided_at` (ISO 8601 with offset; default: the import time);
- `propensity` (default: the arm's configured share);
- `context.<feature>`: context values (a JSON line may instead carry a `context` object);
- one column per event type holding how many of that event the decision had
  (`open, click, conversion, unsubscribe`, declared custom types);
- `revenue`: the conversion value.

A column mapping renames source columns first (e.g. Hillstrom:
segment->arm, visit->click, spend->revenue). Columns that are neither known nor
mapped are reported back as ignored, never silently used.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .numbers import finite_float
from .outcomes import parse_timestamp
from .validity import first_bad_text, json_float, json_int

MAX_COUNT = 10_000


@dataclass(frozen=True, slots=True)
class HistoryRow:
    line: int
    subject_id: str
    arm: str
    decided_at: datetime
    propensity: float
    context: dict[str, Any]
    counts: dict[str, int]
    revenue: float
    fingerprint: str  # the raw row, so a re-sent file maps onto the same decisions


@dataclass
class ParsedHistory:
    rows: list[HistoryRow] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)


def parse_mapping(text: str | None) -> dict[str, str]:
    """'segment:arm,visit:click' -> {'segment': 'arm', 'visit': 'click'}."""
    mapping: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        source, sep, target = part.partition(":")
        if not sep:
            source, sep, target = part.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ValueError(f"column mapping entries look like source:target, got {part.strip()!r}")
        mapping[source.strip()] = target.strip()
    return mapping


class UnreadableFile(ValueError):
    """The file cannot be read on from some line (a CSV field over the limit, a broken quote)."""


# The csv module's default limit on one field (128 KiB); a longer field makes the file unreadable from there.
MAX_CSV_FIELD = csv.field_size_limit()


def read_records(data: bytes, fmt: str) -> Iterator[tuple[int, Mapping[str, Any] | str | None, str]]:
    """(line number, record, raw text) for each data line. The record is None when the line is not a
    JSON object, or the reason (a str) when its text or numbers cannot be stored (see experiments.validity).

    CSV lines may end in CRLF, LF or a bare CR. A CSV field longer than MAX_CSV_FIELD characters
    ends the reading with UnreadableFile naming its line: the parser cannot resynchronise after it.
    """
    text = data.decode("utf-8-sig", errors="replace")
    if fmt == "csv":
        # newline=None: universal newlines, so a file from a system that ends lines with a bare CR reads
        # as lines rather than as one field with line breaks in it.
        reader = csv.DictReader(io.StringIO(text, newline=None))
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise UnreadableFile(f"line {reader.line_num}: the CSV cannot be read ({exc}; a field may hold at "
                                 f"most {MAX_CSV_FIELD} characters)") from None
            line = reader.line_num
            bad = first_bad_text(record)
            yield line, f"{bad[0]} {bad[1]}" if bad else record, json.dumps(
                {str(k): v for k, v in record.items()}, sort_keys=True)
    elif fmt == "ndjson":
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw, parse_constant=_no_constant, parse_float=json_float, parse_int=json_int)
            except (ValueError, RecursionError) as exc:
                reason = str(exc) if "out of range" in str(exc) else None
                yield number, reason, raw
                continue
            bad = first_bad_text(record) if isinstance(record, dict) else None
            yield number, f"{bad[0]} {bad[1]}" if bad else record if isinstance(record, dict) else None, raw
    else:
        raise ValueError(f"format must be csv or ndjson, got {fmt!r}")


def required_subject_id(record: Mapping[str, Any]) -> str:
    """The record's subject_id, trimmed; ValueError when missing or too long."""
    subject = str(record.get("subject_id") or "").strip()
    if not subject or len(subject) > 200:
        raise ValueError("subject_id is required (at most 200 characters)")
    return subject


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number")
    if isinstance(value, (int, float)):
        number = finite_float(value)
    else:
        text = str(value).strip()
        try:
            number = finite_float(float(text))
        except ValueError:
            raise ValueError(f"{name} must be a number, got {text[:30]!r}") from None
    if number is None:
        raise ValueError(f"{name} must be a finite number")
    return number


def _count(value: Any, name: str) -> int:
    if value is None or value == "":
        return 0
    number = _number(value, name)
    if number < 0 or number != int(number) or number > MAX_COUNT:
        raise ValueError(f"{name} must be a whole count between 0 and {MAX_COUNT}, got {value!r}")
    return int(number)


def _context_value(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


def parse_history(
    records: Iterator[tuple[int, Mapping[str, Any] | None, str]],
    *,
    arms: Mapping[str, str],
    shares: Mapping[str, float],
    event_types: Sequence[str],
    mapping: Mapping[str, str],
    now: datetime,
    max_rows: int,
    generate_subject_ids: bool = False,
) -> ParsedHistory:
    """Validate each record; `arms` maps lower-cased arm keys and names to arm keys."""
    result = ParsedHistory()
    known = {"subject_id", "arm", "decided_at", "propensity", "revenue", "context", *event_types}
    ignored: set[str] = set()
    for line, record, raw in records:
        if len(result.rows) + len(result.rejected) >= max_rows:
            result.rejected.append({"line": line, "reason": f"more than {max_rows} rows; the rest was not read"})
            break
        if not isinstance(record, Mapping):
            result.rejected.append({"line": line, "reason": record if isinstance(record, str) else "not a JSON object"})
            continue
        if "\x00" in raw:
            result.rejected.append({"line": line, "reason": "text may not contain NUL characters"})
            continue
        renamed: dict[str, Any] = {}
        for column, value in record.items():
            if column is None:  # csv: more fields than headers
                renamed["__extra__"] = value
                continue
            target = mapping.get(column, column)
            renamed[target] = value
        if generate_subject_ids and "subject_id" not in renamed:
            renamed["subject_id"] = f"line-{line}"  # data without ids (e.g. Hillstrom): one subject per row
        try:
            if "__extra__" in renamed:
                raise ValueError("more fields than header columns")
            result.rows.append(_row(line, renamed, raw, arms, shares, event_types, now))
        except ValueError as exc:
            result.rejected.append({"line": line, "reason": str(exc)})
        ignored.update(c for c in renamed if c not in known and not c.startswith("context.") and c != "__extra__")
    result.ignored_columns = sorted(ignored)
    return result


def _row(line: int, record: Mapping[str, Any], raw: str, arms: Mapping[str, str], shares: Mapping[str, float],
         event_types: Sequence[str], now: datetime) -> HistoryRow:
    subject = record.get("subject_id")
    if subject is None or str(subject).strip() == "":
        raise ValueError("subject_id is required")
    subject = str(subject).strip()
    if len(subject) > 200:
        raise ValueError("subject_id is longer than 200 characters")
    arm_value = record.get("arm")
    if arm_value is None or str(arm_value).strip() == "":
        raise ValueError("arm is required")
    arm = arms.get(str(arm_value).strip().lower())
    if arm is None:
        raise ValueError(f"unknown arm {str(arm_value)[:64]!r}")
    decided = record.get("decided_at")
    decided_at = parse_timestamp(decided, "decided_at") if decided not in (None, "") else now
    if decided_at > now:
        raise ValueError("decided_at is in the future")
    raw_p = record.get("propensity")
    propensity = _number(raw_p, "propensity") if raw_p not in (None, "") else shares.get(arm, 0.0)
    if not 0 < propensity <= 1:
        raise ValueError(f"propensity must be in (0, 1], got {propensity}")
    context: dict[str, Any] = {}
    nested = record.get("context")
    if isinstance(nested, Mapping):
        context.update(nested)
    elif nested not in (None, ""):
        raise ValueError("context must be an object")
    for column, value in record.items():
        if column.startswith("context.") and value not in (None, ""):
            context[column[len("context."):]] = _context_value(value)
    counts = {t: _count(record.get(t), t) for t in event_types}
    raw_revenue = record.get("revenue")
    revenue = _number(raw_revenue, "revenue") if raw_revenue not in (None, "") else 0.0
    if revenue != 0 and counts.get("conversion", 0) == 0:
        raise ValueError("revenue without a conversion")
    return HistoryRow(line=line, subject_id=subject, arm=arm, decided_at=decided_at, propensity=propensity,
                      context=context, counts={t: c for t, c in counts.items() if c}, revenue=revenue,
                      fingerprint=raw)
