"""Settlement runs: from the index to a committed root, and everything read back from a run.

`SettlementService(context).execute(period_start, period_end)` is one run (SETTLEMENT.md "Runs,
versions and finality"):

1. gather the inputs from the index: trades recorded and still active (status `recorded`: a
   cancelled trade is out, an amended one is replaced by its amendment, itself a recorded trade)
   overlapping the period; the latest committed reading per participant and interval; the latest
   committed price per interval, whichever batch holds it; the parameters in effect at the
   period's start (`parameters`); the balancing account;
2. hash them (`inputs_hash`). The period's current version with the same hash is the answer: a
   no-op. Otherwise the next version is computed by the pure engine (`ledger.domain.settlement`);
3. write the run with status `computed`, with all its lines, positions and input references, in
   one database transaction;
4. commit its root on chain, one transaction whatever the run's size;
5. mark it `committed` with the transaction's provenance, and the version before `superseded`.

Resumability: the run is marked done (`committed`) only after every output is written, and each
step can be redone by the next invocation:

- killed before (3) ends: nothing was written; the next invocation starts afresh;
- killed after (3): the next invocation finds the `computed` run and finishes *that* run (its
  lines are stored, so nothing is recomputed) before it looks at the inputs again;
- (4) stores the signed transaction's hash before broadcasting it. Resuming, the chain is asked
  first: if it has the run id already (killed after sending), the run is adopted once its root
  and inputs hash are checked equal to ours; if the node still knows the stored transaction
  (pending), its receipt is awaited; only otherwise is a new transaction signed. The contract
  refuses a second commit of a run id (`SettlementDuplicateRun`), so even a lost race cannot put
  a run on chain twice.

Balancing account: the operator's address (the `operator_key` setting), as SETTLEMENT.md says;
the contract's operator is who nets the imbalances. It must not be a registered participant, which
the engine checks (a party to a trade or a metered account is refused).

The package, module by module:

- `service`: `SettlementService`, the entry point, composing the parts below over one context;
- `inputs`: gathering a run's inputs from the final part of the index (1, 2), and the checks that
  the index holds the whole period;
- `runs`: executing a run (2, 3): computing it, writing it, finishing a `computed` one;
- `commits`: committing a run's root on chain, or adopting the chain's commit (4, 5);
- `reads`: the stored runs read back: lists, details, statements, line proofs;
- `trees`: the Merkle trees of the last few runs, for proofs and disputes;
- `disputes`: disputes of a line: typed data, relaying, resolving, relaying again after a reorg;
- `chain_logs`: the contract's events, and finding one of their logs without a receipt;
- `jobs`: runs requested through the API, stored and executed by the workers' settlement thread;
- `parameters`: the settlement parameters in effect for a period, their scheduled changes, and
  the market's published parameters;
- `views`, `progress`, `errors`: what the service answers with, reports and refuses.
"""

from ledger.services.settlement.chain_logs import DISPUTE_OPENED, DISPUTE_RESOLVED, RUN_COMMITTED
from ledger.services.settlement.errors import (
    IndexBehind,
    NothingToSettle,
    RunInProgress,
    RunMismatch,
    SettlementValueOutOfRange,
)
from ledger.services.settlement.inputs import GatheredInputs
from ledger.services.settlement.progress import Progress, ProgressEvent, Step
from ledger.services.settlement.service import SettlementService
from ledger.services.settlement.views import (
    ChainState,
    DisputeView,
    LineDelta,
    LineProof,
    LineView,
    PositionView,
    RemovedLine,
    RunAction,
    RunDetail,
    RunOutcome,
    RunSummary,
    Statement,
)

__all__ = [
    "DISPUTE_OPENED",
    "DISPUTE_RESOLVED",
    "RUN_COMMITTED",
    "ChainState",
    "DisputeView",
    "GatheredInputs",
    "IndexBehind",
    "LineDelta",
    "LineProof",
    "LineView",
    "NothingToSettle",
    "PositionView",
    "Progress",
    "ProgressEvent",
    "RemovedLine",
    "RunAction",
    "RunDetail",
    "RunInProgress",
    "RunMismatch",
    "RunOutcome",
    "RunSummary",
    "SettlementService",
    "SettlementValueOutOfRange",
    "Statement",
    "Step",
]
