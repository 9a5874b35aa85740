"""What earlier runs wrote: the complete shards as a ledger of records, and rewriting a shard without the
rows a run replaced (or with rows moved to the rejects as duplicates)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mmcore.catalog import ProcessedDir, parse_shard_name
from mmcore.data.ingest.decode import as_duplicate, key64
from mmcore.data.shards import REJECTS, read_metadata, write_table
from mmcore.io import file_sha256, read_json

log = logging.getLogger(__name__)


@dataclass
class Ledger:
    """Complete shards of earlier runs: which record (key, digest) lives where, and the kept images."""

    records: dict[int, tuple[int, int, bool]] = field(default_factory=dict)  # key -> (digest, shard, rejected)
    images: dict[int, str] = field(default_factory=dict)  # image sha256 prefix -> sample id kept
    shards: list[int] = field(default_factory=list)
    drop: dict[int, set[int]] = field(default_factory=dict)  # shard -> record keys to drop from it
    redo: set[int] = field(default_factory=set)  # live rows whose image an earlier live row has (see read)
    repairs: list[str] = field(default_factory=list)  # damaged shards dropped (warnings, for the run's log)

    @classmethod
    def read(cls, processed: ProcessedDir) -> Ledger:
        """The ledger of the complete shards in `processed`, after removing what killed runs left there and the
        shards that are damaged (their records are then ingested again, their token shards rebuilt)."""
        led = cls()
        led.shards, led.repairs = drop_damaged(processed, _remove_leftovers(processed))
        images: list[tuple[int, str, int, int]] = []  # (image prefix, sample id, record key, shard), in order
        tables = {index: _ledger_tables(processed, index) for index in led.shards}
        for index, pair in tables.items():
            if isinstance(pair, str):  # the footer read, the columns did not: damaged all the same
                led.repairs.append(_drop(processed, index, pair))
                led.shards.remove(index)
                continue
            for table, rejected in pair:
                columns = _columns(rejected)
                for key, digest, *kept in zip(*(table[c].to_pylist() for c in columns), strict=True):
                    k = key64(key)
                    if k in led.records:  # rewritten by a later run (killed before it compacted)
                        led.drop.setdefault(led.records[k][1], set()).add(k)
                    led.records[k] = (key64(digest), index, rejected)
                    if kept:
                        images.append((int(kept[1][:16], 16), kept[0], k, index))
        # An image counts as kept only while its row is the live version of its record. The first live row
        # of an image wins; a later live row with the same image (a run killed after writing shards in
        # parallel, before finish_ingest marked duplicates) is processed again, and so becomes a duplicate.
        for prefix, sid, k, index in images:
            if led.records[k][1] != index:
                continue
            if led.images.setdefault(prefix, sid) != sid:
                led.redo.add(k)
        return led


def _columns(rejected: bool) -> list[str]:
    return ["record_key", "record_digest"] + ([] if rejected else ["sample_id", "image_sha256"])


def _ledger_tables(processed: ProcessedDir, index: int) -> list[tuple[pa.Table, bool]] | str:
    """The ledger's columns of shard pair `index` as (table, rejected), or why they cannot be read."""
    out = []
    for path, rejected in ((processed.samples(index), False), (processed.rejects(index), True)):
        try:
            out.append((pq.read_table(path, columns=_columns(rejected)), rejected))
        except (pa.ArrowException, OSError) as exc:
            return f"{path} cannot be read: {type(exc).__name__}: {exc}"
    return out


def drop_damaged(processed: ProcessedDir, indexes: list[int]) -> tuple[list[int], list[str]]:
    """Removes the shards that cannot be read as Parquet or whose bytes differ from the digest the manifest (when
    there is one) recorded: a damaged sample or reject shard takes its pair with it, so its records are ingested
    again; a damaged token shard alone is rebuilt. Returns the indexes kept and a warning per file dropped."""
    entries = _manifest_entries(processed)
    kept, repairs = [], []
    for index in indexes:
        entry = entries.get(index, {})
        damage = (_damage(processed.samples(index), entry.get("samples_sha256"))
                  or _damage(processed.rejects(index), entry.get("rejects_sha256")))
        if damage:
            repairs.append(_drop(processed, index, damage))
            continue
        tokens = processed.tokens(index)
        if tokens.exists() and (damage := _damage(tokens, entry.get("tokens_sha256"))):
            tokens.unlink()
            repairs.append(_warn(f"{damage}: dropped, the shard is tokenized again"))
        kept.append(index)
    return kept, repairs


def _drop(processed: ProcessedDir, index: int, damage: str) -> str:
    for path in (processed.samples(index), processed.rejects(index), processed.tokens(index)):
        path.unlink(missing_ok=True)  # samples first: a run killed meanwhile finds an unfinished shard
    return _warn(f"{damage}: dropped with the rest of shard {index:05d}, whose records are ingested again")


def _warn(message: str) -> str:
    log.warning("%s", message)
    return message


def _damage(path: Path, sha256: str | None) -> str | None:
    """What is wrong with the shard file `path`, or None: absent, no Parquet footer, other bytes than `sha256`."""
    if not path.exists():
        return f"{path} is missing"
    try:
        pq.read_metadata(path)
    except (pa.ArrowException, OSError) as exc:
        return f"{path} cannot be read as Parquet ({type(exc).__name__}: {exc})"
    if sha256 is not None and file_sha256(path) != sha256:
        return f"{path} does not have the bytes the manifest recorded for it (sha256 {sha256[:12]}...)"
    return None


def _manifest_entries(processed: ProcessedDir) -> dict[int, dict[str, Any]]:
    """Shard index -> its manifest entry (with the digests of its files); empty without a readable manifest.

    The manifest is removed by any run that changes a shard and written last, so when there is one, it
    describes the shards on disk."""
    try:
        shards = read_json(processed.manifest)["shards"]
        return {parse_shard_name(entry["samples"])[1]: entry for entry in shards}
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        if processed.manifest.exists():
            _warn(f"{processed.manifest} cannot be read ({type(exc).__name__}: {exc}): shards checked without it")
        return {}


def _remove_leftovers(processed: ProcessedDir) -> list[int]:
    """Removes temporary files of killed writers (writers hold the folder lock) and token or reject shards
    without their sample shard; returns the indexes of the complete shards (those with a sample shard)."""
    for path in sorted(processed.path.glob("*.tmp")):
        path.unlink()
    indexes = list(processed.shard_files("samples"))
    # rejects without samples: an unfinished shard; tokens without samples: a shard since emptied
    for kind in ("rejects", "tokens"):
        for index, path in processed.shard_files(kind).items():
            if index not in indexes:
                path.unlink()
    return indexes


def rewrite_shard(processed: ProcessedDir, index: int, drop: set[int], dupes: dict[int, tuple[str, str]]
                  ) -> tuple[int, int, int]:
    """Rewrites one shard pair without the `drop` record keys and with the `dupes` rows (record key ->
    (kept sample id, where)) moved from samples to rejects as duplicates; returns (accepted, rejected, dropped).
    """
    samples_path, rejects_path = processed.samples(index), processed.rejects(index)
    meta = read_metadata(samples_path)
    samples, rejects = pq.read_table(samples_path), pq.read_table(rejects_path)
    keys = [key64(k) for k in samples["record_key"].to_pylist()]
    moved = [as_duplicate({**samples.slice(i, 1).to_pylist()[0], "where": dupes[k][1]}, dupes[k][0])
             for i, k in enumerate(keys) if k in dupes and k not in drop]
    samples = samples.filter(pa.array([k not in drop and k not in dupes for k in keys], pa.bool_()))
    keep = [key64(k) not in drop for k in rejects["record_key"].to_pylist()]
    dropped = len(keys) - samples.num_rows - len(moved) + keep.count(False)
    rejects = rejects.filter(pa.array(keep, pa.bool_())).replace_schema_metadata(None)
    if moved:  # rows stay in source order, as a single pass would have written them
        rejects = pa.concat_tables([rejects, pa.Table.from_pylist(moved, schema=REJECTS)]).sort_by("record")
    if not (dropped or moved):
        return samples.num_rows, rejects.num_rows, 0
    if samples.num_rows + rejects.num_rows == 0:
        samples_path.unlink()  # incomplete first, then gone
        rejects_path.unlink()
        processed.tokens(index).unlink(missing_ok=True)
    else:
        # Samples first: killed in between, a moved row is in neither file, so the next run ingests it again.
        meta.update(accepted=samples.num_rows, rejected=rejects.num_rows, records=samples.num_rows + rejects.num_rows)
        write_table(samples_path, samples.replace_schema_metadata(None), meta)
        write_table(rejects_path, rejects)
    return samples.num_rows, rejects.num_rows, dropped
