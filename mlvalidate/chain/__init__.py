"""Chain readiness: when is the snapshot block, and where does the bootstrap stand.

The field paths come from the queries Gonka's bootstrap documents (MiniMax-M2.7, Kimi-K2.6)
tell hosts to run, restated in docs/chain-api.md; the constants are in `reading.py`. An answer
that is not JSON, or lacks a field the documents name, is a ChainError: one line naming the
field and the URL it was read from (exit 2). `chain status` says which paths it read and which
it could not find.

* epoch length: `/chain-api/productscience/inference/inference/params` ->
  params.epoch_params.epoch_length (a number sent as a string). `epoch_shift` is never used.
* W_threshold: params.delegation_params.w_threshold, a `{value, exponent}` decimal, read every
  time (a governance parameter). V_min: params.delegation_params.v_min when the answer carries
  it beside w_threshold (and the output says so), else 3 from the bootstrap document's text.
* current epoch: `/v1/epochs/current/participants` -> active_participants.epoch_id and
  .poc_start_block_height; participants[].index (address) and .weight (0, missing or null: no
  voting weight). POC_START = current_poc_start + (EPOCH - current_epoch) * epoch_length,
  SNAPSHOT = POC_START - 500.
* pre-eligibility: `/chain-rpc/block_search?query="bootstrap_model_preeligibility.model_id='M'"`
  (URL-encoded, quotes included) -> the highest result.blocks[].block.header.height, then
  `/chain-rpc/block_results?height=H` -> result.finalize_block_events[] with type
  bootstrap_model_preeligibility, attributes [{key, value}] (strings); the one whose model_id is
  the model. Every attribute is shown, unknown ones included; none is fatal.
* intents: `/chain-api/productscience/inference/inference/poc_delegation/{address}` ->
  intents[].model_id (intents may be null or missing), retried on 502/503/504; a lookup that
  still fails is listed as skipped (intent may be undercounted).
* latest height and time (the documents are silent; CometBFT): `/chain-rpc/status` ->
  result.sync_info.latest_block_height / _time; the recent block time from
  `/chain-rpc/block_search?query="block.height=H-N"` -> result.blocks[0].block.header.time.

Nothing here signs or sends a transaction: `chain status` prints the ones a host may need.
"""

from .queries import intent_coverage, latest_preeligibility, recent_block_time
from .reading import ChainClient, ChainError, decode_decimal, weight_of
from .status import (
    ChainStatus,
    Projection,
    chain_readiness,
    chain_status,
    project,
    readiness_lines,
    source_lines,
    transaction_lines,
    transactions,
)

__all__ = ["ChainClient", "ChainError", "ChainStatus", "Projection", "chain_readiness", "chain_status",
           "decode_decimal", "intent_coverage", "latest_preeligibility", "project", "readiness_lines",
           "recent_block_time", "source_lines", "transaction_lines", "transactions", "weight_of"]
