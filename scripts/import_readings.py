"""Imports a file of meter readings as one batch: checks the whole file, stores it, and commits
its Merkle root on chain from the meter-oracle account.

The file is CSV (`participant,interval_start,injected_wh,withdrawn_wh[,quality]`) or JSON
(`{"readings": [{"participant", "intervalStart", "injectedWh", "withdrawnWh", "quality"?}]}`),
told apart by its extension unless --format says; see ledger/domain/metering.py for the values.
Importing the same readings again is a no-op; an import stopped half-way is finished by running
it again. Settings come from GRIDLEDGER_* variables (or .env), overridden by the flags.

Exit status: 0 imported (now or before); 2 refused input, with every error of the file printed as
`row N, field X: message` and nothing imported; 1 any other failure (node, database, deployment).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ledger import logs
from ledger.config import Settings
from ledger.domain.metering import FileFormat, MeteringFileError, file_format, iso
from ledger.errors import ConflictError, LedgerError, ValidationError
from ledger.services.context import LedgerContext
from ledger.services.metering import BatchResult, MeteringService
from scripts.settings_flags import SettingsRefused, add_settings_flags, settings_from_flags

# Files with more rows than this get a progress line per stored chunk.
PROGRESS_ROWS = 10_000

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


class Refused(Exception):
    """Input the import refuses: printed, exit status 2."""


def parser(description: str | None) -> argparse.ArgumentParser:
    """The arguments both importers take."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path, help="the CSV or JSON file to import")
    parser.add_argument("--format", choices=["csv", "json"], help="default: from the file's extension")
    parser.add_argument("--supersedes", help="id of an earlier batch this file replaces as a whole")
    add_settings_flags(parser)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    try:
        return settings_from_flags(args)
    except SettingsRefused as exc:
        raise Refused(str(exc)) from exc


def read_file(args: argparse.Namespace) -> tuple[bytes, FileFormat]:
    try:
        fmt: FileFormat = args.format or file_format(args.file.name)
    except ValidationError as exc:
        raise Refused(f"{exc}, or pass --format") from exc
    try:
        return args.file.read_bytes(), fmt
    except OSError as exc:
        raise Refused(f"cannot read {args.file}: {exc.strerror}") from exc


def supersedes_from(flag: str | None, in_file: str | None) -> str | None:
    if flag and in_file and flag.lower() != in_file.lower():
        raise Refused(f"--supersedes {flag} differs from the file's supersedes {in_file}")
    return flag or in_file


def progress(total_rows: int, what: str) -> Callable[[int, int], None] | None:
    if total_rows <= PROGRESS_ROWS:
        return None

    def report(done: int, total: int) -> None:
        print(f"stored {done:,}/{total:,} {what}", file=sys.stderr, flush=True)

    return report


def print_result(result: BatchResult, what: str) -> None:
    done = {
        "committed": "committed on chain now",
        "resumed": "committed on chain (an interrupted import finished)",
        "existing": "imported before: nothing sent",
    }[result.outcome]
    print(f"batch id:     {result.batch_id}")
    print(f"root:         {result.root}")
    print(f"{what + ':':<13} {result.count}")
    print(f"period:       {iso(result.period_start)} to {iso(result.period_end)}")
    print(f"transaction:  {result.transaction_hash}")
    print(f"block:        {result.block_number}")
    print(f"status:       {done}")


@contextmanager
def metering_service(settings: Settings) -> Iterator[MeteringService]:
    context = LedgerContext.open(settings)
    try:
        yield MeteringService(context)
    finally:
        context.close()


def run(main: Callable[[argparse.Namespace], BatchResult], args: argparse.Namespace, what: str) -> int:
    """Runs an import and turns its outcome into output and an exit status."""
    logs.configure(level=logging.WARNING)  # problems only: the script prints its own results
    try:
        result = main(args)
    except MeteringFileError as exc:
        for error in exc.errors:
            print(str(error), file=sys.stderr)
        more = exc.error_count - len(exc.errors)
        if more:
            print(f"... and {more} more", file=sys.stderr)
        print(f"{args.file}: {exc.error_count} error(s); nothing was imported", file=sys.stderr)
        return EXIT_REFUSED
    except Refused as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_REFUSED
    except (ValidationError, ConflictError) as exc:  # e.g. --supersedes names an unknown batch
        field = exc.context.get("field")
        print(f"refused{f' ({field})' if field else ''}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except LedgerError as exc:
        print(f"import failed ({exc.code}): {exc}", file=sys.stderr)
        return EXIT_FAILED
    print_result(result, what)
    return EXIT_OK


def import_readings(args: argparse.Namespace) -> BatchResult:
    content, fmt = read_file(args)
    settings = settings_from(args)
    with metering_service(settings) as service:
        parsed = service.parse_readings(content, fmt)
        count = len(parsed.readings)
        print(f"{args.file}: {count:,} readings, all valid", file=sys.stderr)
        return service.import_readings(
            parsed.readings,
            source=args.file.name[-255:],
            supersedes=supersedes_from(args.supersedes, parsed.supersedes),
            progress=progress(count, "readings"),
        )


def main(argv: list[str] | None = None) -> int:
    args: Any = parser(__doc__).parse_args(argv)
    return run(import_readings, args, "readings")


if __name__ == "__main__":
    sys.exit(main())
