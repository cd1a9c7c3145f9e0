"""Makes the services' own records of their transactions true again after a reorg.

The indexer rolls its chain-derived tables back to the fork point and re-indexes; the services'
own records keep what a receipt once said: a reading or price batch `committed` by a transaction
in a block, a settlement run's commit, a dispute's opening and resolution, a relayed trade or
cancellation `recorded` or `rejected`, a participant registration `registered` or `rejected`.
After a reorg each record whose block is above the fork point is checked against the node, by
what the chain does now, not by what its block said:

- where the chain has the record's effect (the event of its id: its batch, run or dispute id,
  the trade id, or the account), the record moves there: the same transaction mined again in another block, or
  another transaction of ours that did the same (a resend; the contracts take each id once);
- else, while the record's transaction waits in the mempool (its nonce not yet taken), the
  record is unconfirmed again until it is mined;
- else the effect is gone (the transaction dropped, replaced, or mined again and reverted) and
  the record returns to the state its service retries from.

Per record (repairs: MOVE / UNCONFIRM / RESET):

  reading_batches, price_batches   committed -> committed at the new block
                                   committed -> prepared with its transaction hash (the next import
                                                of the batch waits for that transaction)
                                   committed -> prepared (the next import commits it again)
  settlement_runs                  committed|superseded -> the same at the new block, with the new
                                                block's time and dispute window
                                   committed|superseded -> computed (the next `settle` of the period
                                                finishes it: adopts the chain's commit, awaits the
                                                pending transaction or sends a new one); the version
                                                it had superseded is committed again
  disputes (opening)               opened at the new block; pending: unconfirmed (stored, so a
                                   restarted service follows it up too) until mined; gone: relayed
                                   again with the account's stored signature (once its run is
                                   committed again, if the reorg took that too: unconfirmed meanwhile)
  disputes (resolution)            resolved at the new block; pending: resolved, block unknown;
                                   gone: open again (the operator's resolve decides it again)
  submissions                      recorded|rejected at the new block, with the new outcome (a
                                   re-execution in another order may turn one into the other)
                                   -> pending (its transaction hash kept)
                                   -> accepted (the relayer sends it again)
  cancellations                    the same as submissions: recorded (the trade cancelled) or
                                   rejected at the new block, pending, or accepted again
  participant_registrations        the same: registered (the account's `ParticipantRegistered`
                                   with the kind and identifier asked for) or rejected at the new
                                   block, pending, or accepted again (the registrar sends it again)

Nothing is committed or settled twice: every contract refuses an id it holds (DuplicateBatch,
SettlementDuplicateRun, DisputeExists, DuplicateTrade, ParticipantAlreadyRegistered), and each
service adopts the chain's commit of an id before it sends one. Settlement reads only final
chain rows (`final_block_number` with `chain_batches`, trades and their events), so a run never
took an input a reorg could undo.

Each repair is one database transaction that first checks that the record still says what the
decision was made on: a record another writer changed meanwhile (its service, from a fresher
receipt) is left as that writer made it. Records left unconfirmed are followed up every few seconds until their
transaction is mined or gone. `decide` is the pure rule; the rest reads the node and writes.
"""

from ledger.services.reconcile.reconciler import Reconciler, Repaired, Report
from ledger.services.reconcile.rule import Fate, Location, Repair, decide

__all__ = ["Fate", "Location", "Reconciler", "Repair", "Repaired", "Report", "decide"]
