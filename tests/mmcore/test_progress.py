from __future__ import annotations

from mmcore.progress import Progress, format_seconds


def test_progress_line_has_rate_and_time_left():
    p = Progress(1000, "records", started=0.0)
    import mmcore.progress as mod

    real = mod.time.monotonic
    try:
        mod.time.monotonic = lambda: 10.0  # 10 s after the start
        line = p.update(250)
    finally:
        mod.time.monotonic = real
    assert line == "250/1000 records (25%), 25 records/s, elapsed 10 s, ETA 30 s"


def test_finished_or_unknown_totals_have_no_eta():
    assert "ETA" not in Progress(4, "epochs").update(4)
    assert "ETA" not in Progress(0, "epochs").update(3)


def test_format_seconds():
    assert [format_seconds(s) for s in (0, 59.4, 61, 3725)] == ["0 s", "59 s", "1m01s", "1h02m"]
