"""Readings and prices files (pure): valid files in both formats, and every bad input refused with
its row and field, all errors of a file at once."""

from __future__ import annotations

import json
from typing import Any

import pytest
from eth_utils import to_checksum_address
from hypothesis import given
from hypothesis import strategies as st

from ledger.domain.metering import (
    MAX_ERRORS,
    MAX_QUANTITY,
    MeteringFileError,
    check_prices,
    check_readings,
    file_format,
    iso,
    parse_prices,
    parse_prices_csv,
    parse_prices_json,
    parse_readings,
    parse_readings_csv,
    parse_readings_json,
)
from ledger.domain.settlement import MeterReading, ReadingQuality
from ledger.errors import ValidationError

ALICE = to_checksum_address("0x" + "a1" * 20)
BOB = to_checksum_address("0x" + "b2" * 20)
STRANGER = to_checksum_address("0x" + "c3" * 20)
REGISTERED = frozenset({ALICE, BOB})
DAY = 1_906_502_400  # 2030-06-01T00:00:00Z
Q = 900
READING_FIELDS = ("participant", "interval_start", "injected_wh", "withdrawn_wh", "quality")
HEADER = ",".join(READING_FIELDS)


def csv_of(*rows: str, header: str = HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def refused_csv(text: str) -> list[tuple[int | None, str]]:
    with pytest.raises(MeteringFileError) as refused:
        parse_readings_csv(text, REGISTERED)
    return [(e.row, e.field) for e in refused.value.errors]


def refused_json(document: Any) -> list[tuple[int | None, str]]:
    with pytest.raises(MeteringFileError) as refused:
        parse_readings_json(document, REGISTERED)
    return [(e.row, e.field) for e in refused.value.errors]


def item(**changes: Any) -> dict[str, Any]:
    return {"participant": ALICE, "intervalStart": DAY, "injectedWh": 10, "withdrawnWh": 0} | changes


# --- valid files -------------------------------------------------------------------------------


def test_csv_readings_in_both_time_forms_with_default_quality() -> None:
    text = "\ufeff" + csv_of(
        f"{ALICE},2030-06-01T00:00:00Z,1000,0,",
        f"{ALICE.lower()}, {DAY + Q} , 0 ,250,Estimated",
        "",
        f"{BOB},2030-06-01T08:00:00+08:00,5,5,substituted",
        "",
    )
    parsed = parse_readings_csv(text, REGISTERED)
    assert parsed.readings == [
        MeterReading(ALICE, DAY, 1000, 0, ReadingQuality.MEASURED),
        MeterReading(ALICE, DAY + Q, 0, 250, ReadingQuality.ESTIMATED),
        MeterReading(BOB, DAY, 5, 5, ReadingQuality.SUBSTITUTED),
    ]
    assert parsed.supersedes is None
    # The quality column may be left out, and columns come in any order, in any case.
    short = csv_of(f"7,{DAY},{BOB},8", header="Injected_Wh,INTERVAL_START,participant,withdrawn_wh")
    assert parse_readings_csv(short.encode(), REGISTERED).readings == [MeterReading(BOB, DAY, 7, 8)]


def test_json_readings_with_supersedes() -> None:
    document = {
        "readings": [item(), item(participant=BOB, intervalStart="2030-06-01T00:15:00Z", quality="estimated")],
        "supersedes": "0x" + "AB" * 32,
    }
    parsed = parse_readings_json(json.dumps(document), REGISTERED)
    assert parsed.readings == [
        MeterReading(ALICE, DAY, 10, 0),
        MeterReading(BOB, DAY + Q, 10, 0, ReadingQuality.ESTIMATED),
    ]
    assert parsed.supersedes == "0x" + "ab" * 32
    assert parse_readings_json(document, REGISTERED) == parsed  # a decoded body, as the API has it
    assert parse_readings(json.dumps(document).encode(), "json", REGISTERED) == parsed


def test_prices_in_both_formats() -> None:
    text = f"interval_start,price_minor_per_mwh\n2030-06-01T00:15:00Z,40001\n{DAY},40000\n"
    parsed = parse_prices_csv(text)
    assert (parsed.period_start, parsed.period_end, parsed.prices) == (DAY, DAY + 2 * Q, {DAY: 40000, DAY + Q: 40001})
    document = {
        "periodStart": iso(DAY),
        "periodEnd": DAY + 2 * Q,
        "prices": [{"intervalStart": DAY, "priceMinorPerMWh": 0}, {"intervalStart": DAY + Q, "priceMinorPerMWh": 9}],
    }
    assert parse_prices(json.dumps(document), "json").prices == {DAY: 0, DAY + Q: 9}
    assert parse_prices_json(document, period_start=DAY, period_end=DAY + 2 * Q).period_end == DAY + 2 * Q


def test_file_format_from_the_extension() -> None:
    assert file_format("readings.CSV") == "csv"
    assert file_format("/tmp/a.b/prices.json") == "json"
    for name in ("readings", "readings.xlsx", "csv"):
        with pytest.raises(ValidationError) as refused:
            file_format(name)
        assert refused.value.field == "format"


# --- bad CSV -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (f"{ALICE},{DAY},1.5,0,", [(2, "injected_wh")]),
        (f"{ALICE},{DAY},1e3,0,", [(2, "injected_wh")]),
        (f"{ALICE},{DAY},-3,0,", [(2, "injected_wh")]),
        (f"{ALICE},{DAY},+3,0,", [(2, "injected_wh")]),
        (f"{ALICE},{DAY},0x10,0,", [(2, "injected_wh")]),
        (f"{ALICE},{DAY},3,,", [(2, "withdrawn_wh")]),
        (f"{ALICE},{DAY},3,{MAX_QUANTITY + 1},", [(2, "withdrawn_wh")]),
        (f"{ALICE},{DAY + 60},3,0,", [(2, "interval_start")]),
        (f"{ALICE},2030-06-01T00:00:00,3,0,", [(2, "interval_start")]),  # naive
        (f"{ALICE},2030-06-01T00:00:00.5Z,3,0,", [(2, "interval_start")]),
        (f"{ALICE},yesterday,3,0,", [(2, "interval_start")]),
        (f"{ALICE},-900,3,0,", [(2, "interval_start")]),
        (f"{ALICE},,3,0,", [(2, "interval_start")]),
        (f"{ALICE},{DAY},3,0,great", [(2, "quality")]),
        (f"{STRANGER},{DAY},3,0,", [(2, "participant")]),
        (f"0x{'a1' * 19},{DAY},3,0,", [(2, "participant")]),
        (f"0x{ALICE[2].swapcase()}{ALICE[3:]},{DAY},3,0,", [(2, "participant")]),  # bad EIP-55 checksum
        (f",{DAY},3,0,", [(2, "participant")]),
        (f"{ALICE},{DAY},3,0", [(2, "columns")]),
        (f"{ALICE},{DAY},3,0,,", [(2, "columns")]),
        (f"{STRANGER},{DAY + 1},-1,x,bad", [(2, f) for f in READING_FIELDS]),
    ],
)
def test_a_bad_csv_value_names_its_line_and_column(row: str, expected: list[tuple[int, str]]) -> None:
    assert refused_csv(csv_of(row)) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("participant,interval_start,injected_wh", [(1, "withdrawn_wh")]),
        (HEADER + ",meter_id", [(1, "meter_id")]),
        ("participant,interval_start,injected_wh,withdrawn_wh,injected_wh", [(1, "injected_wh")]),
        ("who,when,in,out", [(1, "who"), (1, "when"), (1, "in"), (1, "out")] + [(1, f) for f in READING_FIELDS[:4]]),
    ],
)
def test_wrong_missing_and_extra_columns_are_named(header: str, expected: list[tuple[int, str]]) -> None:
    assert refused_csv(csv_of(f"{ALICE},{DAY},1,0", header=header)) == expected


@pytest.mark.parametrize("text", ["", "\n\n", " , ,\n"])
def test_an_empty_file_is_refused(text: str) -> None:
    assert refused_csv(text) == [(1, "header")]


def test_a_file_with_only_a_header_has_no_readings() -> None:
    assert refused_csv(csv_of()) == [(None, "readings")]


def test_a_file_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(MeteringFileError) as refused:
        parse_readings_csv(csv_of(f"{ALICE},{DAY},1,0,").encode("utf-16"), REGISTERED)
    assert [(e.row, e.field) for e in refused.value.errors] == [(None, "file")]


def test_a_duplicate_reading_names_both_rows() -> None:
    errors = None
    with pytest.raises(MeteringFileError) as refused:
        parse_readings_csv(
            csv_of(f"{ALICE},{DAY},1,0,", f"{BOB},{DAY},1,0,", f"{ALICE.lower()},2030-06-01T00:00:00Z,2,0,"),
            REGISTERED,
        )
    errors = refused.value.errors
    assert [(e.row, e.field) for e in errors] == [(4, "interval_start")]
    assert "row 2 has the first" in errors[0].message
    assert str(errors[0]).startswith("row 4, field interval_start: ")


def test_all_errors_of_a_file_are_reported_at_once_up_to_the_cap() -> None:
    rows = [f"{ALICE},{DAY + n * Q},-{n},0," for n in range(1, 151)]
    with pytest.raises(MeteringFileError) as refused:
        parse_readings_csv(csv_of(*rows), REGISTERED)
    error = refused.value
    assert error.error_count == 150 and len(error.errors) == MAX_ERRORS
    assert [e.row for e in error.errors] == list(range(2, 2 + MAX_ERRORS))
    assert error.context["error_count"] == 150
    assert error.context["errors"][0] == {"row": 2, "field": "injected_wh", "message": "must not be negative: '-1'"}
    assert error.code == "metering_file_invalid" and isinstance(error, ValidationError)
    assert str(error).startswith("150 errors in the readings file, nothing was imported; first: row 2")


# --- bad JSON ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"readings": [item(injectedWh=1.5)]}, [(0, "injectedWh")]),
        ({"readings": [item(injectedWh=1e3)]}, [(0, "injectedWh")]),
        ({"readings": [item(injectedWh=-3)]}, [(0, "injectedWh")]),
        ({"readings": [item(injectedWh="3")]}, [(0, "injectedWh")]),
        ({"readings": [item(injectedWh=True)]}, [(0, "injectedWh")]),
        ({"readings": [item(), item(withdrawnWh=None, intervalStart=DAY + Q)]}, [(1, "withdrawnWh")]),
        ({"readings": [item(intervalStart=DAY + 1)]}, [(0, "intervalStart")]),
        ({"readings": [item(intervalStart=float(DAY))]}, [(0, "intervalStart")]),
        ({"readings": [item(intervalStart="2030-06-01 00:00")]}, [(0, "intervalStart")]),
        ({"readings": [item(quality="good")]}, [(0, "quality")]),
        ({"readings": [item(quality=1)]}, [(0, "quality")]),
        ({"readings": [item(participant=STRANGER)]}, [(0, "participant")]),
        ({"readings": [item(participant=42)]}, [(0, "participant")]),
        ({"readings": [item(meter="M-1")]}, [(0, "meter")]),
        ({"readings": [item(), 7]}, [(1, "readings")]),
        ({"readings": [item(), item()]}, [(1, "intervalStart")]),
        ({"readings": [{"participant": ALICE}]}, [(0, "intervalStart"), (0, "injectedWh"), (0, "withdrawnWh")]),
        ({"readings": []}, [(None, "readings")]),
        ({"readings": {}}, [(None, "readings")]),
        ({"reading": [item()]}, [(None, "reading"), (None, "readings")]),
        ({"readings": [item()], "supersedes": "0x12"}, [(None, "supersedes")]),
        ([item()], [(None, "file")]),
    ],
)
def test_a_bad_json_value_names_its_index_and_member(document: Any, expected: list[tuple[int | None, str]]) -> None:
    assert refused_json(document) == expected
    assert refused_json(json.dumps(document)) == expected  # the same as text


def test_text_that_is_not_json_is_refused() -> None:
    with pytest.raises(MeteringFileError) as refused:
        parse_readings_json('{"readings": [', REGISTERED)
    assert [(e.row, e.field) for e in refused.value.errors] == [(None, "file")]
    assert "line 1" in refused.value.errors[0].message


# --- prices ----------------------------------------------------------------------------------------


def prices_csv(*rows: str) -> str:
    return "\n".join(["interval_start,price_minor_per_mwh", *rows]) + "\n"


def refused_prices(text: str, **period: int) -> MeteringFileError:
    with pytest.raises(MeteringFileError) as refused:
        parse_prices_csv(text, **period)
    return refused.value


def test_missing_prices_of_the_period_are_named() -> None:
    error = refused_prices(prices_csv(f"{DAY},1", f"{DAY + 3 * Q},1"))
    assert [(e.row, e.field) for e in error.errors] == [(None, "prices")]
    assert error.context["intervals"] == [DAY + Q, DAY + 2 * Q]
    assert "no price for 2 interval(s)" in error.errors[0].message
    assert iso(DAY + Q) in error.errors[0].message and iso(DAY + 2 * Q) in error.errors[0].message
    # A given period: intervals before the first price are missing too.
    error = refused_prices(prices_csv(f"{DAY},1"), period_start=DAY - Q)
    assert iso(DAY - Q) in error.errors[0].message


def test_prices_outside_the_period_and_duplicates_are_named_by_row() -> None:
    error = refused_prices(
        prices_csv(f"{DAY},1", f"{DAY + Q},2", f"{DAY},3", f"{DAY + 2 * Q},4"), period_end=DAY + 2 * Q
    )
    assert [(e.row, e.field) for e in error.errors] == [(4, "interval_start"), (5, "interval_start")]
    assert "second price" in error.errors[0].message and "outside the period" in error.errors[1].message


@pytest.mark.parametrize(
    ("text", "period", "expected"),
    [
        (prices_csv(f"{DAY},1.5"), {}, [(2, "price_minor_per_mwh")]),
        (prices_csv(f"{DAY},-1"), {}, [(2, "price_minor_per_mwh")]),
        (prices_csv(f"{DAY + 1},1"), {}, [(2, "interval_start")]),
        (prices_csv(f"{DAY},1"), {"period_start": DAY + 1}, [(None, "period_start")]),
        (prices_csv(f"{DAY},1"), {"period_end": DAY}, [(None, "period_end")]),
        (prices_csv(), {}, [(None, "prices")]),
        ("interval_start,price\n", {}, [(1, "price"), (1, "price_minor_per_mwh")]),
    ],
)
def test_bad_price_values(text: str, period: dict[str, int], expected: list[tuple[int | None, str]]) -> None:
    assert [(e.row, e.field) for e in refused_prices(text, **period).errors] == expected


def test_a_json_price_period_must_agree_with_the_given_one() -> None:
    document = {"periodStart": DAY, "prices": [{"intervalStart": DAY, "priceMinorPerMWh": 1}]}
    with pytest.raises(MeteringFileError) as refused:
        parse_prices_json(document, period_start=DAY - Q)
    assert [(e.row, e.field) for e in refused.value.errors] == [(None, "periodStart")]
    with pytest.raises(MeteringFileError) as refused:
        parse_prices_json({"prices": [{"intervalStart": DAY, "price": 1}]})
    assert [(e.row, e.field) for e in refused.value.errors] == [(0, "price"), (0, "priceMinorPerMWh")]


# --- checks on values (what the service runs on whatever it is given) ----------------------------


def test_value_checks_name_list_indexes() -> None:
    with pytest.raises(MeteringFileError) as refused:
        check_readings(
            [MeterReading(ALICE, DAY, 1, 0), MeterReading(BOB, DAY, 1, -1), MeterReading(ALICE, DAY, 1, 0)], REGISTERED
        )
    assert [(e.row, e.field) for e in refused.value.errors] == [(1, "withdrawn_wh"), (2, "interval_start")]
    with pytest.raises(MeteringFileError):
        check_readings([], REGISTERED)
    check_prices({DAY: 1, DAY + Q: 2}, DAY, DAY + 2 * Q)
    with pytest.raises(MeteringFileError) as refused:
        check_prices({DAY: 1, DAY + 5 * Q: 2}, DAY, DAY + 2 * Q)
    messages = [e.message for e in refused.value.errors]
    assert any("outside the period" in m for m in messages) and any("no price for 1" in m for m in messages)


# --- the two formats agree -------------------------------------------------------------------------

readings_strategy = st.lists(
    st.builds(
        MeterReading,
        participant=st.sampled_from(sorted(REGISTERED)),
        interval_start=st.integers(0, 10**6).map(lambda n: n * Q),
        injected_wh=st.integers(0, MAX_QUANTITY),
        withdrawn_wh=st.integers(0, MAX_QUANTITY),
        quality=st.sampled_from(list(ReadingQuality)),
    ),
    min_size=1,
    max_size=20,
    unique_by=lambda r: (r.participant, r.interval_start),
)


@given(readings_strategy, st.booleans())
def test_csv_and_json_of_the_same_readings_parse_alike(values: list[MeterReading], unix: bool) -> None:
    def when(seconds: int) -> str:
        return str(seconds) if unix else iso(seconds)

    rows = [f"{r.participant},{when(r.interval_start)},{r.injected_wh},{r.withdrawn_wh},{r.quality}" for r in values]
    document = {
        "readings": [
            {
                "participant": r.participant.lower(),
                "intervalStart": r.interval_start if unix else iso(r.interval_start),
                "injectedWh": r.injected_wh,
                "withdrawnWh": r.withdrawn_wh,
                "quality": r.quality.value,
            }
            for r in values
        ]
    }
    assert parse_readings_csv(csv_of(*rows), REGISTERED).readings == values
    assert parse_readings_json(json.dumps(document), REGISTERED).readings == values
