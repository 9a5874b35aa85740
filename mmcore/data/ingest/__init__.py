"""Ingest: source records -> checked, decoded, resized, deduplicated Parquet shards.

Three steps, so an orchestrator can spread the shards over processes or machines:

    plan_ingest     reads the ledger (below), streams the source once and cuts the records that need
                    processing into shards of `shard_size`, each in a staging file beside the output
                    (`ProcessedDir.staging`)
    ingest_shard    one shard: decodes its records (optionally with a process pool) and writes
                        ProcessedDir.samples(i)   accepted records (written last: marks the shard complete)
                        ProcessedDir.rejects(i)   rejected records with a reason code, a message and where
    finish_ingest   marks image duplicates across shards, drops replaced rows from old shards, checks counts

`ingest()` runs the three in order. Every record ends in exactly one of the two files. Exact duplicates
(same image bytes, or a repeated record key) are rejected as `duplicate` pointing at the record that was
kept; the first one in source order wins, whatever order the shards were written in.

Earlier runs are a ledger: a record whose key and content digest are already in a complete shard is
kept as it is. So a killed run resumes where it stopped, with byte-identical shards, and a source that
grew is ingested incrementally into new shards. A record that was edited, retried (`retry_rejected`)
or removed from the source is dropped from its old shard, so the live shards always hold each current
record exactly once: records in = accepted + rejected. A run holds `folder_lock(processed.path)` from plan
to finish, so two runs on one dataset take turns instead of removing each other's files.

Modules: `decode` (one record -> an accepted or rejected row; the decode process pool), `ledger` (what
earlier runs wrote), `plan` (plan_ingest and its IngestPlan), `steps` (ingest_shard, finish_ingest, ingest),
`tokens` (the tokenizer, token shards and the manifest).
"""

from mmcore.data.ingest.decode import SPLITS, assign_split, process_pool, process_record
from mmcore.data.ingest.plan import IngestPlan, ShardWork, plan_ingest
from mmcore.data.ingest.steps import IngestReport, ShardResult, finish_ingest, ingest, ingest_shard
from mmcore.data.ingest.tokens import build_manifest, fit_tokenizer, tokenize_shard

__all__ = [
    "SPLITS",
    "IngestPlan",
    "IngestReport",
    "ShardResult",
    "ShardWork",
    "assign_split",
    "build_manifest",
    "fit_tokenizer",
    "finish_ingest",
    "ingest",
    "ingest_shard",
    "plan_ingest",
    "process_pool",
    "process_record",
    "tokenize_shard",
]
