"""A deterministic "photos" fixture: photo-sized JPEGs in the COCO captions, VQA v2 and Karpathy layouts.

Each picture is a procedurally drawn outdoor scene: a sky over the ground (gradients and blotchy texture),
one to four objects (balls, boxes, tents, kites, people in coloured T-shirts) from left to right, with
per-pixel noise, so the JPEGs compress like photographs. Sizes are 640x480, 480x640 (portrait) and
1600x480 (panorama, aspect 3.3, under ingest's default max_aspect 4.0). Some files are stored rotated with
an EXIF Orientation tag (the upright picture is the one described), some are greyscale (mode L) and some
CMYK. Five cased, punctuated captions and 4-6 VQA questions with ten human answers each are derived from
the scene (mmcore/data/photo_text.py), so every label is correct by construction. Picture i depends only
on (seed, i): a larger fixture starts with exactly the pictures of a smaller one.

    <out>/train2017/000000000001.jpg ...  val2017/...  test2017/...   the pictures (COCO file names)
    <out>/annotations/captions_{train,val,test}2017.json                 COCO captions
    <out>/annotations/v2_OpenEnded_mscoco_{...}2017_questions.json, v2_mscoco_{...}2017_annotations.json
    <out>/dataset_coco.json                                              Karpathy splits

The last 30% of the pictures are held out like Karpathy's split of COCO val2014: a third val, a third test, the
rest restval (training data). Unlike COCO, whose test2017 captions are not public, the test third is written as
a test2017 subset with its captions and answers, so that every layout has a test split to evaluate on.

Run by hand:
    python -m mmcore.data.photos data/raw/photos --images 240 --seed 0
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mmcore.data.photo_text import captions, karpathy_tokens, questions

KINDS = ("ball", "box", "tent", "kite", "person")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 35), "green": (35, 150, 55), "blue": (35, 75, 215),
    "yellow": (240, 210, 35), "purple": (135, 55, 185), "orange": (240, 125, 25),
}  # fmt: skip
SKIES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {  # (top, horizon)
    "clear": ((60, 120, 205), (185, 212, 240)), "sunset": ((80, 55, 125), (250, 165, 85)),
    "overcast": ((140, 142, 148), (205, 206, 210)), "night": ((8, 12, 38), (40, 46, 82)),
}  # fmt: skip
GROUNDS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {  # (horizon, bottom)
    "grass": ((112, 150, 70), (62, 105, 40)), "sand": ((222, 200, 150), (185, 160, 110)),
    "snow": ((235, 238, 245), (200, 205, 220)),
}  # fmt: skip
FRAMES = {"landscape": (640, 480), "portrait": (480, 640), "panorama": (1600, 480)}
FRAME_P = (0.6, 0.3, 0.1)
COUNT_P = (0.3, 0.35, 0.2, 0.15)  # 1, 2, 3 or 4 objects
# Stored form of picture i by i % 12: a fixed pattern, so that even a 12-picture fixture has each kind.
SPECIAL = {2: ("exif", 6), 5: ("grey", 1), 8: ("exif", 8), 9: ("cmyk", 1), 11: ("exif", 3)}
# EXIF orientation -> the transpose that stores the upright picture so that ImageOps.exif_transpose undoes it
STORE = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
NOISE = 5.0  # std of the per-pixel noise: far below the gap between object colours
QUALITY = 88
HELD_OUT = 0.3  # share of the pictures held out (Karpathy's val, test and restval)
SUBSETS = {"train": "train2017", "restval": "val2017", "val": "val2017", "test": "test2017"}  # split -> folder


@dataclass(frozen=True)
class Photo:
    """What one picture is: enough for a test to check how ingest stored it."""

    image_id: int
    file: str  # relative to the root, e.g. "train2017/000000000001.jpg"
    size: tuple[int, int]  # (width, height) upright
    orientation: int  # EXIF orientation of the stored file (1: stored upright)
    mode: str  # "RGB", "L" or "CMYK"
    split: str  # Karpathy split: train, restval, val or test
    sky: tuple[int, int, int]  # colour of the top row, upright
    ground: tuple[int, int, int]  # colour of the bottom row, upright


@dataclass(frozen=True)
class PhotoSummary:
    """What `generate_photos` wrote."""

    root: Path
    images: int
    captions: int
    questions: int
    photos: tuple[Photo, ...]


def generate_photos(out_dir: str | Path, images: int = 240, seed: int = 0) -> PhotoSummary:
    """Write `images` photo-like scenes with captions, questions and splits under `out_dir`.

    Same arguments give byte-identical files; the annotation files are written last, atomically.

    Args:
        out_dir: Dataset root; created if missing.
        images: Number of pictures, >= 4 (each Karpathy split gets at least one).
        seed: Non-negative base seed; picture i uses ``default_rng([seed, i])``.
    """
    if images < 4:
        raise ValueError(f"images must be >= 4 so that train, val and test each get one, got {images}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (numpy seed sequences reject negatives), got {seed}")
    root = Path(out_dir)
    held_out = max(3, round(HELD_OUT * images))
    photos, scenes = [], []
    for index in range(images):
        rng = np.random.default_rng([seed, index])
        scene = sample_scene(rng)
        form, orientation = SPECIAL.get(index % 12, ("rgb", 1))
        scene["grey"] = form == "grey"  # what the captions may say: no colours in a greyscale picture
        split = _karpathy_split(index - (images - held_out), held_out)
        photo = _write_picture(root, index, render(scene, rng), form, orientation, split)
        scene["captions"], scene["qa"] = captions(scene, rng), questions(scene, rng)
        photos.append(photo)
        scenes.append(scene)
    _write_annotations(root, photos, scenes)
    return PhotoSummary(root, images, sum(len(s["captions"]) for s in scenes), sum(len(s["qa"]) for s in scenes),
                        tuple(photos))


def _karpathy_split(k: int, held_out: int) -> str:
    """Held-out pictures (k >= 0) are cut like Karpathy's: a third val, a third test, the rest restval."""
    if k < 0:
        return "train"
    third = held_out // 3
    return "val" if k < third else "test" if k < 2 * third else "restval"


def sample_scene(rng: np.random.Generator) -> dict[str, Any]:
    """The scene: frame, sky, ground and 1-4 objects from left to right (one per horizontal slot)."""
    frame = list(FRAMES)[int(rng.choice(len(FRAMES), p=FRAME_P))]
    width, height = FRAMES[frame]
    n = int(rng.choice(len(COUNT_P), p=COUNT_P)) + 1
    horizon = int(height * rng.uniform(0.45, 0.6))
    objects = []
    for slot in range(n):
        kind = KINDS[int(rng.integers(len(KINDS)))]
        big = bool(rng.random() < 0.5)
        x = int((slot + 0.5 + rng.uniform(-0.1, 0.1)) * width / n)
        # object height: a share of the picture's height, narrow enough for its slot
        h = min(height * (0.42 if big else 0.24), 0.75 * width / n / (1.0 if kind == "tent" else 0.7))
        third = min(2, 3 * x // width)
        objects.append({"kind": kind, "color": list(COLORS)[int(rng.integers(len(COLORS)))],
                        "size": "big" if big else "small", "x": x, "h": int(h),
                        "position": ("left", "middle", "right")[third]})
    return {"frame": frame, "size": (width, height), "horizon": horizon,
            "sky": list(SKIES)[int(rng.integers(len(SKIES)))],
            "ground": list(GROUNDS)[int(rng.integers(len(GROUNDS)))], "objects": objects, "grey": False}


def render(scene: dict[str, Any], rng: np.random.Generator) -> Image.Image:
    """The upright RGB picture: gradients with blotchy texture, the objects, then per-pixel noise."""
    width, height = scene["size"]
    horizon = scene["horizon"]
    sky, ground = np.array(SKIES[scene["sky"]], np.float32), np.array(GROUNDS[scene["ground"]], np.float32)
    rows = np.empty((height, 3), np.float32)  # (H, 3): the gradient, one colour per row
    t = np.linspace(0.0, 1.0, horizon, dtype=np.float32)[:, None]
    rows[:horizon] = sky[0] + t * (sky[1] - sky[0])
    t = np.linspace(0.0, 1.0, height - horizon, dtype=np.float32)[:, None]
    rows[horizon:] = ground[0] + t * (ground[1] - ground[0])
    # texture: coarse random blotches, smoothly upsampled (clouds, tufts of grass)
    coarse = rng.normal(0.0, 9.0, size=(height // 40 + 2, width // 40 + 2)).astype(np.float32)
    blotches = np.asarray(Image.fromarray(coarse, "F").resize((width, height), Image.Resampling.BILINEAR))
    base = rows[:, None, :] + blotches[:, :, None]  # (H, W, 3)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for obj in scene["objects"]:
        _draw_object(draw, obj, horizon, height, rng)
    pixels = np.asarray(image, np.float32) + rng.normal(0.0, NOISE, size=(height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")


def _draw_object(draw: ImageDraw.ImageDraw, obj: dict[str, Any], horizon: int, height: int,
                 rng: np.random.Generator) -> None:
    """One object standing on the ground below the horizon (a kite flies in the sky), outlined in dark grey."""
    x, h, fill = obj["x"], obj["h"], COLORS[obj["color"]]
    line, width = (30, 30, 30), max(2, h // 40)
    base = int(rng.uniform(horizon + 0.25 * (height - horizon), height - 0.05 * height))  # where it stands
    if obj["kind"] == "ball":
        r = int(0.35 * h)
        draw.ellipse([x - r, base - 2 * r, x + r, base], fill=fill, outline=line, width=width)
        draw.ellipse([x - r // 2, base - 2 * r + r // 4, x - r // 6, base - 2 * r + r // 2], fill=_lighter(fill))
    elif obj["kind"] == "box":
        s = int(0.3 * h)
        draw.rectangle([x - s, base - 2 * s, x + s, base], fill=fill, outline=line, width=width)
        draw.line([x - s, base - s, x + s, base - s], fill=line, width=width)  # the tape across the lid
    elif obj["kind"] == "tent":
        w = int(0.5 * h)
        draw.polygon([(x, base - int(0.7 * h)), (x + w, base), (x - w, base)], fill=fill, outline=line, width=width)
        draw.polygon([(x, base - int(0.35 * h)), (x + w // 4, base), (x - w // 4, base)], fill=line)  # the door
    elif obj["kind"] == "kite":
        r = int(0.3 * h)
        cy = max(r + 4, int(rng.uniform(0.2, 0.6) * horizon))  # whole, below the top edge
        draw.line([x, cy + r, x + r // 2, cy + 3 * r], fill=line, width=width)  # the tail
        draw.polygon([(x, cy - r), (x + int(0.7 * r), cy), (x, cy + r), (x - int(0.7 * r), cy)], fill=fill,
                     outline=line, width=width)
    elif obj["kind"] == "person":
        head, body = int(0.11 * h), int(0.36 * h)
        top = base - h
        draw.line([x - head, base, x, top + 2 * head + body, x + head, base], fill=(45, 45, 80), width=3 * width)
        draw.rectangle([x - int(0.7 * head), top + 2 * head, x + int(0.7 * head), top + 2 * head + body], fill=fill,
                       outline=line, width=width)  # the T-shirt
        draw.ellipse([x - head, top, x + head, top + 2 * head], fill=(225, 185, 150), outline=line, width=width)
    else:
        raise ValueError(f"Unknown object kind {obj['kind']!r}; expected one of {KINDS}")


def _lighter(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(min(255, c + 70) for c in colour)  # type: ignore[return-value]


def _write_picture(root: Path, index: int, upright: Image.Image, form: str, orientation: int, split: str) -> Photo:
    """Stores picture `index` in its split's folder as `form` says: "exif" (rotated, with the Orientation tag),
    "grey", "cmyk" or "rgb"."""
    image_id = index + 1
    stored = upright.transpose(STORE[orientation]) if form == "exif" else upright
    stored = stored.convert({"grey": "L", "cmyk": "CMYK"}.get(form, "RGB"))
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation  # the EXIF Orientation tag
    rel = f"{SUBSETS[split]}/{image_id:012d}.jpg"
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    stored.save(tmp, format="JPEG", quality=QUALITY, exif=exif.tobytes())
    os.replace(tmp, path)
    pixels = np.asarray(upright.convert("L").convert("RGB") if form == "grey" else upright)
    top, bottom = (tuple(int(v) for v in np.median(pixels[r], axis=0)) for r in (0, -1))
    return Photo(image_id, rel, upright.size, orientation, stored.mode, split, top, bottom)


def _write_annotations(root: Path, photos: list[Photo], scenes: list[dict[str, Any]]) -> None:
    """COCO captions, VQA v2 questions and annotations per subset, then the Karpathy file."""
    for subset in ("train2017", "val2017", "test2017"):
        part = [(p, s) for p, s in zip(photos, scenes, strict=True) if p.file.startswith(subset)]
        info = {"description": "mmcore photos fixture (procedurally drawn)", "version": "1.0"}
        images = [{"id": p.image_id, "file_name": p.file.split("/")[1], "width": p.size[0], "height": p.size[1],
                   "license": 0} for p, _ in part]
        caps = [{"id": p.image_id * 10 + j, "image_id": p.image_id, "caption": c}
                for p, s in part for j, c in enumerate(s["captions"])]
        _dump(root / "annotations" / f"captions_{subset}.json",
              {"info": info, "licenses": [], "images": images, "annotations": caps})
        qs = [{"image_id": p.image_id, "question": q["question"], "question_id": p.image_id * 1000 + j}
              for p, s in part for j, q in enumerate(s["qa"])]
        anns = [_vqa_annotation(p.image_id, p.image_id * 1000 + j, q) for p, s in part for j, q in enumerate(s["qa"])]
        common = {"info": info, "license": {}, "data_type": "mscoco", "data_subtype": subset}
        _dump(root / "annotations" / f"v2_OpenEnded_mscoco_{subset}_questions.json",
              {**common, "task_type": "Open-Ended", "questions": qs})
        _dump(root / "annotations" / f"v2_mscoco_{subset}_annotations.json", {**common, "annotations": anns})
    entries = [{"filepath": p.file.split("/")[0], "filename": p.file.split("/")[1], "imgid": i, "split": p.split,
                "sentids": [5 * i + j for j in range(len(s["captions"]))], "cocoid": p.image_id,
                "sentences": [{"raw": c, "tokens": karpathy_tokens(c), "imgid": i, "sentid": 5 * i + j}
                              for j, c in enumerate(s["captions"])]}
               for i, (p, s) in enumerate(zip(photos, scenes, strict=True))]
    _dump(root / "dataset_coco.json", {"images": entries, "dataset": "coco"})


def _vqa_annotation(image_id: int, question_id: int, qa: dict[str, Any]) -> dict[str, Any]:
    counts = Counter(qa["answers"])
    return {"question_id": question_id, "image_id": image_id, "question_type": qa["question_type"],
            "answer_type": qa["answer_type"], "multiple_choice_answer": min(counts, key=lambda a: (-counts[a], a)),
            "answers": [{"answer": a, "answer_confidence": c, "answer_id": k + 1}
                        for k, (a, c) in enumerate(zip(qa["answers"], qa["confidence"], strict=True))]}


def _dump(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        json.dump(doc, fh, ensure_ascii=False)
    os.replace(tmp, path)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    s = generate_photos(args.out_dir, args.images, args.seed)
    print(f"wrote {s.images} pictures, {s.captions} captions, {s.questions} questions to {s.root}")
