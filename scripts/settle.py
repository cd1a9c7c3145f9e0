"""Settles a period: gathers its inputs from the index, computes the statements, writes them and
commits the run's Merkle root on chain (one transaction whatever its size).

    python -m scripts.settle --day 2026-01-01
    python -m scripts.settle --from 2026-01-01T00:00:00+00:00 --to 2026-01-01T06:00:00+00:00

Running it again with the same inputs prints the existing run and commits nothing; after a crash
or Ctrl-C at any point, running it again finishes the interrupted run. Settings come from the
environment (GRIDLEDGER_RPC_URL, GRIDLEDGER_DATABASE_URL, GRIDLEDGER_DEPLOYMENT_FILE, ...) or
the flags below.

Exit codes: 0 done (committed, resumed or unchanged), 1 settlement refused or failed (the reason
is printed, e.g. the intervals without a reference price), 2 bad arguments or settings, 130
interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from ledger import logs
from ledger.domain.settlement import MissingReferencePrice
from ledger.domain.units import INTERVAL_SECONDS, to_datetime, to_unix
from ledger.errors import LedgerError
from ledger.services.context import LedgerContext
from ledger.services.settlement import ProgressEvent, RunOutcome, SettlementService
from scripts.settings_flags import SettingsRefused, add_settings_flags, settings_from_flags


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logs.configure(level=logging.WARNING)  # problems only: the script prints its own results
    period_start, period_end = _period(parser, args)
    try:
        settings = settings_from_flags(args)
    except SettingsRefused as exc:
        print(exc, file=sys.stderr)
        return 2

    intervals = (period_end - period_start) // INTERVAL_SECONDS
    print(f"settling {_iso(period_start)} .. {_iso(period_end)} ({intervals} intervals)", flush=True)
    context: LedgerContext | None = None
    try:
        context = LedgerContext.open(settings)
        outcome = SettlementService(context).execute(period_start, period_end, progress=_print_progress)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to finish the run", file=sys.stderr)
        return 130
    except MissingReferencePrice as exc:
        print(f"settlement refused: {exc.message}", file=sys.stderr)
        print("intervals without a reference price:", file=sys.stderr)
        for line in _interval_ranges(exc.intervals):
            print(f"  {line}", file=sys.stderr)
        return 1
    except LedgerError as exc:
        print(f"settlement refused: {exc} ({exc.code})", file=sys.stderr)
        return 1
    finally:
        if context is not None:
            context.close()
    _print_run(outcome)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.settle", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    period = parser.add_mutually_exclusive_group(required=True)
    period.add_argument("--day", type=_day, help="a UTC day, YYYY-MM-DD: its 96 intervals")
    period.add_argument("--from", dest="start", type=_moment, help="period start, ISO 8601 with a UTC offset")
    parser.add_argument("--to", dest="end", type=_moment, help="period end (exclusive), with --from")
    add_settings_flags(parser, ("rpc_url", "database_url", "deployment_file"))
    return parser


def _period(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[int, int]:
    """[start, end) in Unix seconds, or exit 2 naming the flag at fault (parser.error)."""
    if args.day is not None:
        if args.end is not None:
            parser.error("argument --to: not allowed with --day")
        start = to_unix(datetime.combine(args.day, datetime.min.time(), tzinfo=UTC))
        return start, to_unix(datetime.combine(args.day + timedelta(days=1), datetime.min.time(), tzinfo=UTC))
    if args.end is None:
        parser.error("argument --to: required with --from")
    for flag, value in (("--from", args.start), ("--to", args.end)):
        if value % INTERVAL_SECONDS:
            parser.error(f"argument {flag}: must start a 15-minute interval (a multiple of {INTERVAL_SECONDS} s)")
    if args.end <= args.start:
        parser.error("argument --to: must be after --from")
    return int(args.start), int(args.end)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def _moment(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date-time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"no UTC offset in {text!r}: add +00:00 or Z (naive times are refused)")
    return to_unix(moment)


def _print_progress(event: ProgressEvent) -> None:
    counts = f" {event.done}/{event.total}" if event.total is not None else ""
    detail = f": {event.detail}" if event.detail else ""
    print(f"- {event.step.value}{counts}{detail}", flush=True)


def _print_run(outcome: RunOutcome) -> None:
    run = outcome.run
    action = {
        "committed": "committed now",
        "resumed": "an interrupted run, finished now",
        "unchanged": "unchanged inputs: the existing run, nothing committed",
    }[outcome.action.value]
    rows = [
        ("run", run.run_id),
        ("period", f"{_iso(run.period_start)} .. {_iso(run.period_end)}"),
        ("version", f"{run.version} ({run.status.value}; {action})"),
        ("root", run.root),
        ("inputsHash", run.inputs_hash),
        ("lines", str(run.line_count)),
        ("totals", f"receivable {run.total_receivable_minor:,} / payable {run.total_payable_minor:,} minor units"),
        ("tx", run.transaction_hash or "-"),
        ("block", str(run.block_number) if run.block_number is not None else "-"),
    ]
    if outcome.gas_used is not None:
        rows.append(("gas", f"{outcome.gas_used:,}"))
    for label, value in rows:
        print(f"{label:11} {value}")


def _interval_ranges(starts: Sequence[int]) -> list[str]:
    """Consecutive interval starts as ranges: "00:00 .. 05:45 (24 intervals)"."""
    ranges: list[list[int]] = []
    for start in sorted(starts):
        if ranges and start == ranges[-1][1] + INTERVAL_SECONDS:
            ranges[-1][1] = start
        else:
            ranges.append([start, start])
    return [
        _iso(first)
        if first == last
        else f"{_iso(first)} .. {_iso(last)} ({(last - first) // INTERVAL_SECONDS + 1} intervals)"
        for first, last in ranges
    ]


def _iso(unix_seconds: int) -> str:
    return to_datetime(unix_seconds).isoformat()


if __name__ == "__main__":
    sys.exit(main())
