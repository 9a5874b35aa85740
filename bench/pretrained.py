"""Pretrained image weights against the same encoder trained from scratch, on the photos fixture, side by side.

Both runs use the `photos` preset with the same architecture, data, seed and epochs; only `encoder.weights`
differs (both normalise images with ImageNet's mean and std, as the encoder always does). The weights are read
from the torch hub cache or a local file and never downloaded: without them the command stops at once with the
error that says where to put them.

Run:
    python -m bench.pretrained --weights ResNet18_Weights.IMAGENET1K_V1 --out bench/results/pretrained.json
    python -m bench.pretrained --arch resnet18 --weights /models/resnet18.pth --weights-sha256 f37072fd
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.direct import run_direct
from mmcore.config import load_config
from mmcore.data.photos import generate_photos
from mmcore.models.weights import check_sha256, is_torchvision_name, weights_file

# What the comparison reads: retrieval both ways and the captions, each beside its baseline
SHOWN = ("t2i_r1", "t2i_r5", "i2t_r1", "i2t_r5", "t2i_mean_rank", "caption_bleu4", "caption_cider_d")


def compare(root: Path, arch: str, weights: str, sha256: str | None, images: int, sets: dict[str, str],
            log: bool = True) -> dict[str, Any]:
    """Runs the fixture from scratch and from `weights`; returns both runs' metrics and seconds."""
    source = root / "raw" / "photos"
    if not (source / "dataset_coco.json").exists():
        generate_photos(source, images, seed=0)
    common = {"data_root": str(root), "ingest.source": str(source), "encoder.image_arch": arch, **sets}
    runs = {}
    for name, extra in (("scratch", {}), ("pretrained", {"encoder.weights": weights,
                                                          **({"encoder.weights_sha256": sha256} if sha256 else {})})):
        cfg = load_config("photos", {**common, **extra}, dataset=f"photos-{name}")
        result = run_direct(cfg, log=log)
        runs[name] = {"metrics": result["metrics"], "seconds": result["seconds"], "device": result["device"]}
    return {"arch": arch, "weights": weights, "images": images, "config": sets, "runs": runs}


def table(result: dict[str, Any]) -> str:
    scratch, pretrained = (result["runs"][k]["metrics"] for k in ("scratch", "pretrained"))
    lines = ["| metric | from scratch | pretrained | baseline |", "|---|---:|---:|---:|"]
    for name in SHOWN:
        if name in scratch:
            base = scratch.get(f"{name}_baseline")
            lines.append(f"| {name} | {scratch[name]:.4f} | {pretrained[name]:.4f} | "
                         f"{'' if base is None else f'{base:.4f}'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18", help="a torchvision architecture the encoder supports")
    parser.add_argument("--weights", default="IMAGENET1K_V1", help="torchvision weights name or a local file")
    parser.add_argument("--weights-sha256", help="sha256 (or its first 8+ hex digits) of a local weights file")
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--root", help="data root to reuse (default: a temporary folder)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()
    try:  # the weights before any work: a missing or damaged file is the one-line error, not a half-run
        path = weights_file(args.arch, args.weights)
        check_sha256(path, args.weights_sha256, hash_in_name=is_torchvision_name(args.weights))
    except (FileNotFoundError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    sets = dict(item.split("=", 1) for item in args.set)
    with tempfile.TemporaryDirectory(prefix="pretrained-") as tmp:
        result = compare(Path(args.root or tmp), args.arch, args.weights, args.weights_sha256, args.images, sets)
    print(table(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
