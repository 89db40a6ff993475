"""History import: column mappings, reading CSV and JSON lines, every row rule with its line number,
and the first 2,000 rows of the real Hillstrom file checked against pandas."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from experiments.history import ParsedHistory, parse_history, parse_mapping, read_records
from experiments.spec import BUILTIN_EVENTS

HILLSTROM = Path("/work/shared/data/hillstrom.csv")
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ARMS = {"control": "control", "no e-mail": "control", "mens": "mens", "mens e-mail": "mens",
        "womens": "womens", "womens e-mail": "womens"}
SHARES = {"control": 0.5, "mens": 0.25, "womens": 0.25}


def parse(data: str | bytes, fmt: str = "csv", *, mapping: dict[str, str] | None = None, max_rows: int = 1000,
          event_types: tuple[str, ...] = (*BUILTIN_EVENTS, "add_to_cart"),
          shares: dict[str, float] = SHARES) -> ParsedHistory:
    raw = data.encode() if isinstance(data, str) else data
    return parse_history(read_records(raw, fmt), arms=ARMS, shares=shares, event_types=event_types,
                         mapping=mapping or {}, now=NOW, max_rows=max_rows)


def csv_text(*lines: str) -> str:
    return "\n".join(lines) + "\n"


# --- column mappings -------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("segment:arm,visit:click", {"segment": "arm", "visit": "click"}),
    ("a=b", {"a": "b"}),
    (" segment : arm , visit=click ,", {"segment": "arm", "visit": "click"}),
    ("recency:context.recency", {"recency": "context.recency"}),
    ("", {}),
    (None, {}),
    (",,", {}),
])
def test_parse_mapping(text: str | None, expected: dict[str, str]) -> None:
    assert parse_mapping(text) == expected


@pytest.mark.parametrize("text, entry", [
    ("segment:arm,visit", "visit"),
    (":arm", ":arm"),
    ("segment:", "segment:"),
    ("=click", "=click"),
    ("segment -> arm", "segment -> arm"),
])
def test_malformed_mapping_entry_is_refused_and_quoted(text: str, entry: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_mapping(text)
    assert str(info.value) == f"column mapping entries look like source:target, got {entry!r}"


# --- reading records --------------------------------------------------------------------

def test_read_records_csv_numbers_lines_from_the_header() -> None:
    records = list(read_records(b"subject_id,arm\nc-1,mens\nc-2,womens\n", "csv"))
    assert [(line, dict(record)) for line, record, _ in records] == [
        (2, {"subject_id": "c-1", "arm": "mens"}), (3, {"subject_id": "c-2", "arm": "womens"})]
    assert records[0][2] == '{"arm": "mens", "subject_id": "c-1"}'


def test_read_records_csv_strips_a_byte_order_mark() -> None:
    (line, record, _), = read_records("\ufeffsubject_id,arm\nc-1,mens\n".encode(), "csv")
    assert line == 2 and record == {"subject_id": "c-1", "arm": "mens"}


def test_read_records_ndjson_yields_none_for_unreadable_lines() -> None:
    data = b'{"subject_id": "c-1", "arm": "mens"}\n\n{not json\n[1, 2]\n{"value": NaN}\n{"subject_id": "c-2"}\n'
    records = list(read_records(data, "ndjson"))
    assert [(line, record) for line, record, _ in records] == [
        (1, {"subject_id": "c-1", "arm": "mens"}), (3, None), (4, None), (5, None), (6, {"subject_id": "c-2"})]
    assert records[1][2] == "{not json"


def test_read_records_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="format must be csv or ndjson, got 'xlsx'"):
        list(read_records(b"", "xlsx"))


# --- rows ---------------------------------------------------------------------------------

HEADER = "subject_id,arm,decided_at,propensity,open,click,conversion,revenue,context.recency,context.tier,note"
SAMPLE = csv_text(
    HEADER,
    "c-1,mens,2026-05-01T10:00:00Z,0.3,1,2,1,29.90,3,gold,x",      # 2 good, everything set
    "c-2,kids,2026-05-01T10:00:00Z,,,,,,,,",                        # 3 unknown arm
    ",mens,2026-05-01T10:00:00Z,,,,,,,,",                           # 4 missing subject
    "c-4,womens,,,,-1,,,,,",                                        # 5 negative count
    "c-5,womens,,,,1.5,,,,,",                                       # 6 fractional count
    "c-6,womens,,,1,,,12.00,,,",                                    # 7 revenue without conversion
    "c-7,control,2026-05-01T10:00:00,,,,,,,,",                      # 8 naive decided_at
    "c-8,control,2026-06-01T12:00:01Z,,,,,,,,",                     # 9 decided in the future
    "c-9,control,,0,,,,,,,",                                        # 10 propensity 0
    "c-10,control,,1.5,,,,,,,",                                     # 11 propensity above 1
    "c-12,No E-Mail,2026-06-01T12:00:00Z,,,,,,,,",                  # 12 good: arm by name, decided now
    "c-13, MENS E-MAIL ,2026-05-01T12:00:00+02:00,1,,,2,15.5,2.5,,", # 13 good: name, offset, 2 conversions
)


def test_each_rejection_is_reported_with_its_line_and_reason() -> None:
    result = parse(SAMPLE)
    assert result.rejected == [
        {"line": 3, "reason": "unknown arm 'kids'"},
        {"line": 4, "reason": "subject_id is required"},
        {"line": 5, "reason": "click must be a whole count between 0 and 10000, got '-1'"},
        {"line": 6, "reason": "click must be a whole count between 0 and 10000, got '1.5'"},
        {"line": 7, "reason": "revenue without a conversion"},
        {"line": 8, "reason": "decided_at needs a time zone offset (e.g. Z or +01:00)"},
        {"line": 9, "reason": "decided_at is in the future"},
        {"line": 10, "reason": "propensity must be in (0, 1], got 0.0"},
        {"line": 11, "reason": "propensity must be in (0, 1], got 1.5"},
    ]
    assert [row.line for row in result.rows] == [2, 12, 13]
    assert result.ignored_columns == ["note"]


def test_good_rows_carry_every_value() -> None:
    first, by_name, offset = parse(SAMPLE).rows
    assert (first.subject_id, first.arm, first.decided_at, first.propensity) == (
        "c-1", "mens", datetime(2026, 5, 1, 10, 0, tzinfo=UTC), 0.3)
    assert first.counts == {"open": 1, "click": 2, "conversion": 1}
    assert first.revenue == 29.90
    assert first.context == {"recency": 3, "tier": "gold"}
    assert type(first.context["recency"]) is int
    assert (by_name.arm, by_name.decided_at, by_name.propensity, by_name.counts, by_name.revenue, by_name.context) == (
        "control", NOW, 0.5, {}, 0.0, {})
    assert (offset.subject_id, offset.arm, offset.decided_at, offset.propensity) == (
        "c-13", "mens", datetime(2026, 5, 1, 10, 0, tzinfo=UTC), 1.0)
    assert offset.counts == {"conversion": 2} and offset.revenue == 15.5
    assert offset.context == {"recency": 2.5}


def test_row_with_more_fields_than_the_header_is_rejected() -> None:
    result = parse(csv_text("subject_id,arm", "c-1,mens", "c-2,mens,surplus", "c-3,womens"))
    assert result.rejected == [{"line": 3, "reason": "more fields than header columns"}]
    assert [r.line for r in result.rows] == [2, 4]


def test_row_with_fewer_fields_than_the_header_reads_the_rest_as_empty() -> None:
    row, = parse(csv_text("subject_id,arm,click,context.x", "c-1,mens")).rows
    assert (row.counts, row.context) == ({}, {})


def test_decided_at_defaults_to_now_and_propensity_to_the_arm_share() -> None:
    result = parse(csv_text("subject_id,arm", "c-1,mens", "c-2,control", "c-3,Womens E-Mail"))
    assert [(r.arm, r.decided_at, r.propensity) for r in result.rows] == [
        ("mens", NOW, 0.25), ("control", NOW, 0.5), ("womens", NOW, 0.25)]


def test_arm_without_a_share_has_no_default_propensity() -> None:
    result = parse(csv_text("subject_id,arm", "c-1,mens"), shares={"control": 1.0})
    assert result.rejected == [{"line": 2, "reason": "propensity must be in (0, 1], got 0.0"}]


@pytest.mark.parametrize("row, reason", [
    ("c-1,,", "arm is required"),
    ("  ,mens,", "subject_id is required"),
    ("c-1,mens,abc", "propensity must be a number, got 'abc'"),
    ("c-1,mens,nan", "propensity must be a finite number"),
    (f"{'s' * 201},mens,", "subject_id is longer than 200 characters"),
])
def test_more_row_rules(row: str, reason: str) -> None:
    assert parse(csv_text("subject_id,arm,propensity", row)).rejected == [{"line": 2, "reason": reason}]


@pytest.mark.parametrize("value, ok", [("10000", True), ("10001", False), ("2.0", True), ("1e2", True), ("x", False)])
def test_count_limits(value: str, ok: bool) -> None:
    result = parse(csv_text("subject_id,arm,open", f"c-1,mens,{value}"))
    if ok:
        assert result.rows[0].counts == {"open": int(float(value))}
    else:
        assert len(result.rejected) == 1 and result.rejected[0]["reason"].startswith("open must be")


def test_custom_event_columns_are_counted_and_unknown_ones_ignored() -> None:
    result = parse(csv_text("subject_id,arm,add_to_cart,wishlist", "c-1,mens,3,1"))
    assert result.rows[0].counts == {"add_to_cart": 3}
    assert result.ignored_columns == ["wishlist"]


def test_decided_exactly_now_is_not_in_the_future() -> None:
    result = parse(csv_text("subject_id,arm,decided_at", "c-1,mens,2026-06-01T14:00:00+02:00"))
    assert result.rejected == [] and result.rows[0].decided_at == NOW


@pytest.mark.parametrize("text, value", [
    ("3", 3), ("-4", -4), ("2.5", 2.5), ("1e3", 1000.0), ("10.0", 10.0), (" 7 ", 7),
    ("gold", "gold"), ("nan", "nan"), ("inf", "inf"), ("2) $100 - $200", "2) $100 - $200"),
])
def test_context_columns_become_numbers_where_numeric(text: str, value: Any) -> None:
    row, = parse(csv_text("subject_id,arm,context.x", f'c-1,mens,"{text}"')).rows
    assert row.context == {"x": value}
    assert type(row.context["x"]) is type(value)


def test_empty_context_cells_are_left_out() -> None:
    row, = parse(csv_text("subject_id,arm,context.x,context.y", "c-1,mens,,4")).rows
    assert row.context == {"y": 4}


def test_mapping_renames_columns_before_the_rules() -> None:
    result = parse(csv_text("cust,segment,visit,spend,conversion,recency,misc", "c-1,Mens E-Mail,1,10.5,1,4,z"),
                   mapping={"cust": "subject_id", "segment": "arm", "visit": "click", "spend": "revenue",
                            "recency": "context.recency"})
    row, = result.rows
    assert (row.subject_id, row.arm, row.counts, row.revenue, row.context) == (
        "c-1", "mens", {"click": 1, "conversion": 1}, 10.5, {"recency": 4})
    assert result.ignored_columns == ["misc"]


def test_max_rows_cuts_off_and_says_so() -> None:
    rows = [f"c-{i},mens" for i in range(6)]
    result = parse(csv_text("subject_id,arm", *rows[:2], "c-x,kids", *rows[2:]), max_rows=4)
    assert [r.line for r in result.rows] == [2, 3, 5]
    assert result.rejected == [{"line": 4, "reason": "unknown arm 'kids'"},
                               {"line": 6, "reason": "more than 4 rows; the rest was not read"}]


def test_exactly_max_rows_is_not_cut_off() -> None:
    result = parse(csv_text("subject_id,arm", "c-1,mens", "c-2,mens"), max_rows=2)
    assert len(result.rows) == 2 and result.rejected == []


def test_fingerprint_is_the_raw_row() -> None:
    row, = parse(csv_text("subject_id,arm", "c-1,mens")).rows
    assert row.fingerprint == '{"arm": "mens", "subject_id": "c-1"}'
    again, = parse(csv_text("subject_id,arm", "c-1,mens")).rows
    assert again.fingerprint == row.fingerprint


# --- JSON lines -----------------------------------------------------------------------------

def test_ndjson_rows_with_nested_context_and_unreadable_lines() -> None:
    data = "\n".join([
        '{"subject_id": "c-1", "arm": "womens", "conversion": 1, "revenue": 20, "context": {"tier": "gold"},'
        ' "context.recency": 5}',
        "not json",
        '{"subject_id": "c-2", "arm": "mens", "context": "gold"}',
        '{"subject_id": "c-3", "arm": "mens", "click": true}',
        '["c-4", "mens"]',
        '{"subject_id": "c-5", "arm": "mens", "decided_at": 1764000000}',
    ])
    result = parse(data, "ndjson")
    row, = result.rows
    assert (row.line, row.arm, row.counts, row.revenue, row.propensity) == (
        1, "womens", {"conversion": 1}, 20.0, 0.25)
    assert row.context == {"tier": "gold", "recency": 5}
    assert result.rejected == [
        {"line": 2, "reason": "not a JSON object"},
        {"line": 3, "reason": "context must be an object"},
        {"line": 4, "reason": "click must be a number"},
        {"line": 5, "reason": "not a JSON object"},
        {"line": 6, "reason": "decided_at must be an ISO 8601 string with a time zone"},
    ]


def test_ndjson_number_too_large_for_a_float_rejects_only_its_row() -> None:
    data = '{"subject_id": "c-1", "arm": "mens", "click": ' + "1" * 400 + '}\n{"subject_id": "c-2", "arm": "mens"}\n'
    result = parse(data, "ndjson")
    assert [r.line for r in result.rows] == [2]
    assert [r["line"] for r in result.rejected] == [1]


# --- the real Hillstrom file ------------------------------------------------------------------

HILLSTROM_ROWS = 2000
HILLSTROM_CONTEXT = ("recency", "history_segment", "history", "mens", "womens", "zip_code", "newbie", "channel")
HILLSTROM_MAPPING = ",".join(["segment:arm", "visit:click", "conversion:conversion", "spend:revenue",
                              *(f"{c}:context.{c}" for c in HILLSTROM_CONTEXT)])
HILLSTROM_ARMS = {"mens": "mens", "mens e-mail": "mens", "womens": "womens", "womens e-mail": "womens",
                  "control": "control", "no e-mail": "control"}
THIRDS = {"control": 1 / 3, "mens": 1 / 3, "womens": 1 / 3}


def hillstrom_lines() -> list[str]:
    """The header and the first 2,000 data rows of the file, as written."""
    with HILLSTROM.open(encoding="utf-8") as handle:
        return [next(handle).rstrip("\n") for _ in range(HILLSTROM_ROWS + 1)]


def parse_hillstrom(lines: list[str], generate_subject_ids: bool = True) -> ParsedHistory:
    data = ("\n".join(lines) + "\n").encode()
    return parse_history(read_records(data, "csv"), arms=HILLSTROM_ARMS, shares=THIRDS,
                         event_types=BUILTIN_EVENTS, mapping=parse_mapping(HILLSTROM_MAPPING), now=NOW,
                         max_rows=1_000_000, generate_subject_ids=generate_subject_ids)


needs_hillstrom = pytest.mark.skipif(not HILLSTROM.exists(), reason="shared Hillstrom data is not present")


@needs_hillstrom
def test_hillstrom_rows_all_import_and_match_pandas() -> None:
    result = parse_hillstrom(hillstrom_lines())
    assert result.rejected == []
    assert result.ignored_columns == []
    assert len(result.rows) == HILLSTROM_ROWS
    assert [r.line for r in result.rows] == list(range(2, HILLSTROM_ROWS + 2))
    assert [r.subject_id for r in result.rows] == [f"line-{n}" for n in range(2, HILLSTROM_ROWS + 2)]
    assert {r.propensity for r in result.rows} == {1 / 3}
    assert {r.decided_at for r in result.rows} == {NOW}

    frame = pd.read_csv(HILLSTROM, nrows=HILLSTROM_ROWS)
    frame["arm"] = frame["segment"].map({"Mens E-Mail": "mens", "Womens E-Mail": "womens", "No E-Mail": "control"})
    expected = frame.groupby("arm").agg(n=("visit", "size"), clicks=("visit", "sum"),
                                        conversions=("conversion", "sum"), revenue=("spend", "sum"),
                                        history=("history", "sum"), recency=("recency", "sum"))
    parsed = pd.DataFrame({
        "arm": [r.arm for r in result.rows],
        "clicks": [r.counts.get("click", 0) for r in result.rows],
        "conversions": [r.counts.get("conversion", 0) for r in result.rows],
        "revenue": [r.revenue for r in result.rows],
        "history": [r.context["history"] for r in result.rows],
        "recency": [r.context["recency"] for r in result.rows],
    })
    got = parsed.groupby("arm").agg(n=("clicks", "size"), clicks=("clicks", "sum"),
                                    conversions=("conversions", "sum"), revenue=("revenue", "sum"),
                                    history=("history", "sum"), recency=("recency", "sum"))
    assert list(got.index) == ["control", "mens", "womens"] == list(expected.index)
    for column in ("n", "clicks", "conversions", "recency"):
        assert got[column].tolist() == expected[column].tolist(), column
    for column in ("revenue", "history"):
        assert got[column].tolist() == pytest.approx(expected[column].tolist(), rel=1e-12), column
    assert int(got["n"].sum()) == HILLSTROM_ROWS
    assert not any("open" in r.counts or "unsubscribe" in r.counts for r in result.rows)


@needs_hillstrom
def test_hillstrom_first_row_as_parsed() -> None:
    # recency,history_segment,history,mens,womens,zip_code,newbie,channel,segment,visit,conversion,spend
    # 10,2) $100 - $200,142.44,1,0,Surburban,0,Phone,Womens E-Mail,0,0,0
    row = parse_hillstrom(hillstrom_lines()).rows[0]
    assert (row.line, row.subject_id, row.arm, row.counts, row.revenue) == (2, "line-2", "womens", {}, 0.0)
    assert row.context == {"recency": 10, "history_segment": "2) $100 - $200", "history": 142.44, "mens": 1,
                           "womens": 0, "zip_code": "Surburban", "newbie": 0, "channel": "Phone"}


@needs_hillstrom
def test_hillstrom_without_generated_ids_is_refused_row_by_row() -> None:
    result = parse_hillstrom(hillstrom_lines(), generate_subject_ids=False)
    assert result.rows == []
    assert result.rejected == [{"line": n, "reason": "subject_id is required"} for n in range(2, HILLSTROM_ROWS + 2)]


def test_generated_ids_never_replace_a_given_subject_id() -> None:
    data = csv_text("subject_id,arm", "c-1,mens", ",mens").encode()
    result = parse_history(read_records(data, "csv"), arms=ARMS, shares=SHARES, event_types=BUILTIN_EVENTS,
                           mapping={}, now=NOW, max_rows=10, generate_subject_ids=True)
    assert [r.subject_id for r in result.rows] == ["c-1"]
    assert result.rejected == [{"line": 3, "reason": "subject_id is required"}]


def test_generated_ids_apply_after_the_mapping() -> None:
    data = csv_text("cust,arm", "c-1,mens").encode()
    result = parse_history(read_records(data, "csv"), arms=ARMS, shares=SHARES, event_types=BUILTIN_EVENTS,
                           mapping={"cust": "subject_id"}, now=NOW, max_rows=10, generate_subject_ids=True)
    assert [r.subject_id for r in result.rows] == ["c-1"]
