"""The stages' Prefect cache keys: content digests, code version and output location, never run ids."""

from __future__ import annotations


def test_cache_key_follows_code_config_and_location(tmp_path, monkeypatch):
    from tasks import caching

    parts = lambda p: {"data": p["digest"]}  # noqa: E731
    out = tmp_path / "out.pt"
    key_fn = caching.digest_cache("train", parts, lambda p: [str(out)])
    key = key_fn(None, {"digest": "a"})
    assert key and key == key_fn(None, {"digest": "a"})
    assert key != key_fn(None, {"digest": "b"})
    elsewhere = tmp_path / "other" / "out.pt"
    assert key != caching.digest_cache("train", parts, lambda p: [str(elsewhere)])(None, {"digest": "a"})
    monkeypatch.setattr(caching, "code_version", lambda: "other-code")
    assert key != key_fn(None, {"digest": "a"})
    assert caching.check_refresh(["all"]) == list(caching.STAGES)
    assert caching.digest_cache("train", lambda p: None)(None, {}) is None  # parts None: not cached


def test_a_cached_result_whose_files_are_gone_runs_again(harness, tmp_path):
    from prefect import flow, task

    from tasks import caching

    out = tmp_path / "made.txt"
    calls = []

    @task(cache_key_fn=caching.digest_cache("train", lambda p: {"x": p["x"]}), persist_result=True)
    def make(x: int) -> str:
        calls.append(x)
        out.write_text(str(x))
        return str(out)

    @flow
    def run() -> list[bool]:
        seen = []
        for _ in range(2):
            _, cached = caching.run_stage_task(make, 7, files=lambda path: [path])
            seen.append(cached)
        out.unlink()
        _, cached = caching.run_stage_task(make, 7, files=lambda path: [path])
        return [*seen, cached]

    assert run() == [False, True, False]
    assert len(calls) == 2 and out.exists()
