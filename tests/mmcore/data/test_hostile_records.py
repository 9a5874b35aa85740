"""Property: whatever records a source holds, an ingest returns, and every record is accepted or rejected once, with
a reason from records.REASONS and where it is; a second run over the same source finds nothing to do.

Hostile datasets of every format come from tests/mmcore/data/hostilekit.py. The examples are derandomized (the same
ones in every run, so CI stays deterministic) and few, to keep each format's test to a few seconds; raise
MM_HOSTILE_EXAMPLES (e.g. 500) to search further by hand.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmcore.catalog import ProcessedDir
from mmcore.config import IngestConfig
from mmcore.data.ingest import ingest
from mmcore.data.records import REASONS
from mmcore.data.sources import open_source
from tests.mmcore.data.hostilekit import WRITERS
from tests.mmcore.data.ingest.ingestkit import rows

CFG = IngestConfig(image_size=16, min_side=4, max_side=64, max_aspect=4.0, shard_size=3, vocab_size=64)
EXAMPLES = int(os.environ.get("MM_HOSTILE_EXAMPLES", "12"))


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(data=st.data())
def test_hostile_records_are_each_accepted_or_rejected_and_never_stop_an_ingest(fmt, data):
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "raw", ProcessedDir(Path(tmp) / "out")
        WRITERS[fmt](root, data.draw)
        report = ingest(open_source(root, fmt), out, CFG)
        samples, rejects = rows(report, "samples"), rows(report, "rejects")
        assert report.records_in == report.accepted + report.rejected == len(samples) + len(rejects)
        assert sorted(r["record"] for r in samples + rejects) == list(range(1, report.records_in + 1))
        for reject in rejects:
            assert reject["reason"] in REASONS, reject
            assert isinstance(reject["where"], str) and reject["where"] and reject["message"], reject
        again = ingest(open_source(root, fmt), out, CFG)
        assert (again.records_in, again.processed, again.kept, again.dropped) == (report.records_in, 0,
                                                                                  report.records_in, 0)
