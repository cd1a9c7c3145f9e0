"""Imports a file of reference prices as one batch: exactly one price per interval of its period,
committed on chain (its Merkle root) from the market operator's account.

The file is CSV (`interval_start,price_minor_per_mwh`) or JSON (`{"prices": [{"intervalStart",
"priceMinorPerMWh"}], "periodStart"?, "periodEnd"?}`); the period is --period-start/--period-end,
else the file's, else from its first interval to the end of its last. Importing the same prices
again is a no-op. Settings come from GRIDLEDGER_* variables (or .env), overridden by the flags.

Exit status: 0 imported (now or before); 2 refused input, with every error printed as
`row N, field X: message` and nothing imported; 1 any other failure.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime
from typing import Any

from ledger import logs
from ledger.domain.units import to_unix
from ledger.services.metering import BatchResult
from scripts.import_readings import metering_service, parser, progress, read_file, run, settings_from, supersedes_from


def moment(text: str) -> int:
    """Unix seconds from whole Unix seconds or an ISO 8601 time with its UTC offset."""
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither Unix seconds nor ISO 8601") from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset (add Z or +00:00)")
    return to_unix(parsed)


def import_prices(args: argparse.Namespace) -> BatchResult:
    content, fmt = read_file(args)
    settings = settings_from(args)
    with metering_service(settings) as service:
        parsed = service.parse_prices(content, fmt, period_start=args.period_start, period_end=args.period_end)
        count = len(parsed.prices)
        print(f"{args.file}: {count:,} prices, one per interval of the period", file=sys.stderr)
        return service.import_prices(
            parsed.prices,
            parsed.period_start,
            parsed.period_end,
            source=args.file.name[-255:],
            supersedes=supersedes_from(args.supersedes, parsed.supersedes),
            progress=progress(count, "prices"),
        )


def main(argv: list[str] | None = None) -> int:
    arguments = parser(__doc__)
    arguments.add_argument("--period-start", type=moment, help="ISO 8601 with offset, or Unix seconds")
    arguments.add_argument("--period-end", type=moment, help="exclusive; ISO 8601 with offset, or Unix seconds")
    args: Any = arguments.parse_args(argv)
    logs.configure(level=logging.WARNING)  # problems only: the script prints its own results
    return run(import_prices, args, "prices")


if __name__ == "__main__":
    sys.exit(main())
