"""Stage durations and headline metrics of the latest pipeline run, as a markdown table.

Run after `make demo` (or any pipeline run):

    .venv/bin/python bench/demo_report.py --dataset shapes >> BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlflow.tracking import MlflowClient  # noqa: E402

import flows  # noqa: E402,F401  (embedded defaults: the project's MLflow store)
from mmcore.report import metric_rows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="shapes")
    args = parser.parse_args()
    client = MlflowClient()
    exp = client.get_experiment_by_name(args.dataset)
    if exp is None:
        sys.exit(f"no experiment {args.dataset!r} in {os.environ['MLFLOW_TRACKING_URI']}: run the pipeline first")
    parent = client.search_runs([exp.experiment_id], "tags.stage = 'pipeline' and attributes.status = 'FINISHED'",
                                order_by=["attributes.start_time DESC"], max_results=1)
    if not parent:
        sys.exit("no finished pipeline run")
    parent = parent[0]
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                                  order_by=["attributes.start_time ASC"])
    secs = lambda r: (r.info.end_time - r.info.start_time) / 1000  # noqa: E731
    print(f"### Pipeline run {parent.info.run_id[:8]} ({args.dataset}), {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}\n")
    print("| stage | seconds |\n|---|---|")
    for r in children:
        print(f"| {r.data.tags['stage']} | {secs(r):.1f} |")
    print(f"| **pipeline total** | **{secs(parent):.1f}** |\n")
    print("| metric | value | baseline |\n|---|---|---|")
    for name, value, base in metric_rows(parent.data.metrics):
        print(f"| {name} | {value:.4f} | {'' if base is None else f'{base:.4f}'} |")
    per_type = {k: v for k, v in parent.data.metrics.items() if k.startswith("vqa_acc_")
                and k not in ("vqa_acc_baseline", "vqa_acc_question_only", "vqa_acc_image_only")}
    if per_type:
        print("\nVQA accuracy by question type: " + ", ".join(f"{k[8:]} {v:.3f}" for k, v in sorted(per_type.items())))


if __name__ == "__main__":
    main()
