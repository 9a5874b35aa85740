"""What earlier runs wrote: the complete shards as a ledger of records, and rewriting a shard without the
rows a run replaced (or with rows moved to the rejects as duplicates)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from mmcore.catalog import ProcessedDir
from mmcore.data.ingest.decode import as_duplicate, key64
from mmcore.data.shards import REJECTS, read_metadata, write_table


@dataclass
class Ledger:
    """Complete shards of earlier runs: which record (key, digest) lives where, and the kept images."""

    records: dict[int, tuple[int, int, bool]] = field(default_factory=dict)  # key -> (digest, shard, rejected)
    images: dict[int, str] = field(default_factory=dict)  # image sha256 prefix -> sample id kept
    shards: list[int] = field(default_factory=list)
    drop: dict[int, set[int]] = field(default_factory=dict)  # shard -> record keys to drop from it
    redo: set[int] = field(default_factory=set)  # live rows whose image an earlier live row has (see read)

    @classmethod
    def read(cls, processed: ProcessedDir) -> Ledger:
        """The ledger of the complete shards in `processed`, after removing what killed runs left there."""
        led = cls()
        led.shards = _remove_leftovers(processed)
        images: list[tuple[int, str, int, int]] = []  # (image prefix, sample id, record key, shard), in order
        for index in led.shards:
            for path, rejected in ((processed.samples(index), False), (processed.rejects(index), True)):
                columns = ["record_key", "record_digest"] + ([] if rejected else ["sample_id", "image_sha256"])
                table = pq.read_table(path, columns=columns)
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
