"""The refusals of a settlement run, each with its problem code."""

from __future__ import annotations

from ledger import errors


class IndexBehind(errors.ConflictError):
    """The index has not reached the end of the period: trades of it may be missing."""

    code = "index_behind_period"


class NothingToSettle(errors.ValidationError):
    """No trade and no reading in the period: a run needs at least one line."""

    code = "nothing_to_settle"


class RunInProgress(errors.ConflictError):
    """Another invocation is writing this version of the period."""

    code = "run_in_progress"


class RunMismatch(errors.ConflictError):
    """The chain has this run id with another root or inputs hash than the index: the index and
    the chain disagree, and only a person can tell which is wrong."""

    code = "run_mismatch"


class SettlementValueOutOfRange(errors.LedgerError):
    """A line or position value does not fit the index's 64-bit columns (see settlement_models)."""

    code = "settlement_value_out_of_range"
