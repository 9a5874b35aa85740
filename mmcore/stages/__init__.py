"""The pipeline's stages as plain functions: ingest, pretrain, extract, train, evaluate (and package, which
puts a trained model's files in one folder for registration).

Each stage module has a `run(cfg, cat, ...)` that takes the resolved `PipelineConfig` and the `Catalog`,
does the whole stage in this process and returns a typed result (the paths, digests and counts it
wrote), and `inputs(cfg, cat)`, the digests that determine its output (what a cache keys on). Stages
that fan out per shard (ingest, extract) also expose their steps, which the Prefect tasks run one shard
per task; `run` chains the same steps. Every rule of a stage lives in its module: tasks and flows only
call it, log what it returns and decide where it runs.

This package imports no stage module itself, so importing one stage loads only the code that stage runs
(its cache key covers exactly that code).
"""

# The stages whose results Prefect caches, and so the names `--refresh` takes (tasks/caching.py).
CACHED = ("pretrain", "extract", "train", "evaluate")
