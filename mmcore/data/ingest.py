"""Ingest: validate, decode and resize images, split by content hash, write Parquet shards.

Work is cut into chunks of annotation lines; each chunk becomes one sample shard and one reject shard,
so chunks run independently (one orchestrator task each) and a rerun skips finished chunks. Every
record of a chunk ends up in exactly one of the two files.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
from PIL import Image, ImageOps, UnidentifiedImageError

from mmcore.config import IngestConfig
from mmcore.data import records as R
from mmcore.data.shards import REJECTS, SAMPLES, read_metadata, write_table

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Chunk:
    """A contiguous run of annotation lines: `count` lines from byte `start`, numbered from `first`.

    `records` counts the non-blank lines among them: the records that must come out accepted or rejected.
    `sha256` is the digest of the chunk's bytes: an edited line makes a finished shard stale.
    """

    index: int
    start: int
    count: int
    first: int
    records: int
    sha256: str

    @property
    def name(self) -> str:
        return f"{self.index:05d}"


@dataclass(frozen=True)
class ChunkResult:
    chunk: Chunk
    samples_path: str
    rejects_path: str
    accepted: int
    rejected: int
    skipped: bool  # True when a finished shard from an earlier run was kept


def plan_chunks(annotations: str | Path, lines_per_chunk: int) -> list[Chunk]:
    """Cuts the annotation file into chunks by line count, recording byte offsets so each chunk seeks."""
    path = Path(annotations)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist (expected the canonical layout: "
                                f"<root>/{R.ANNOTATIONS} + <root>/images/)")
    chunks, offset, line_no, start, first, records = [], 0, 0, 0, 1, 0
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for raw in fh:
            line_no += 1
            offset += len(raw)
            records += bool(raw.strip())
            digest.update(raw)
            if line_no - first + 1 == lines_per_chunk:
                chunks.append(Chunk(len(chunks), start, lines_per_chunk, first, records, digest.hexdigest()))
                start, first, records, digest = offset, line_no + 1, 0, hashlib.sha256()
    if line_no >= first:
        chunks.append(Chunk(len(chunks), start, line_no - first + 1, first, records, digest.hexdigest()))
    return chunks


def assign_split(sha256: str, shares: tuple[float, float, float]) -> str:
    """Deterministic split from a content digest: the same image always lands in the same split."""
    u = int(sha256[:15], 16) / 16**15  # uniform in [0, 1)
    if u < shares[0]:
        return "train"
    return "val" if u < shares[0] + shares[1] else "test"


def to_rgb_square(img: Image.Image, size: int) -> Image.Image:
    """Orientation applied, any mode to RGB, resized to size x size: the one image preprocessing."""
    img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale directly, much faster
    frame = ImageOps.exif_transpose(img).convert("RGB")
    return frame.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)


def load_image(data: bytes, cfg: IngestConfig) -> tuple[bytes, int, int] | tuple[str, str]:
    """Decodes, checks and resizes one image file's bytes: (png bytes, width, height), or (reason, message)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if min(width, height) < cfg.min_side:
                    return R.TOO_SMALL, f"{width}x{height} is below the minimum side {cfg.min_side}"
                if max(width, height) > cfg.max_side:
                    return R.TOO_LARGE, f"{width}x{height} is above the maximum side {cfg.max_side}"
                if max(width, height) / min(width, height) > cfg.max_aspect:
                    return R.BAD_ASPECT, f"aspect ratio of {width}x{height} exceeds {cfg.max_aspect}"
                frame = to_rgb_square(img, cfg.image_size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return R.TOO_LARGE, f"decompression bomb guard: {exc}"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return R.UNDECODABLE, f"{type(exc).__name__}: {exc}"
    buf = io.BytesIO()
    frame.save(buf, format="PNG", optimize=False)
    return buf.getvalue(), width, height


def _accept(ann: R.Annotation, root: Path, cfg: IngestConfig) -> dict | R.Rejection:
    bad = R.check_text(ann, cfg.max_text_chars)
    if bad is not None:
        return bad
    path = (root / ann.image).resolve()
    if not path.is_relative_to(root.resolve()):
        return R.Rejection(0, ann.sample_id, ann.image, R.OUTSIDE_ROOT, f"{ann.image} is outside {root}")
    if not path.is_file():
        return R.Rejection(0, ann.sample_id, ann.image, R.MISSING_FILE, f"{path} does not exist")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    loaded = load_image(data, cfg)
    if isinstance(loaded[0], str):
        return R.Rejection(0, ann.sample_id, ann.image, loaded[0], loaded[1])
    png, width, height = loaded
    return {
        "sample_id": ann.sample_id,
        "image_path": ann.image,
        "image_sha256": digest,
        "split": assign_split(digest, cfg.split),
        "width": width,
        "height": height,
        "image": png,
        "captions": [{"lang": lang, "text": t.strip()} for lang, caps in ann.captions.items() for t in caps],
        "qa": [{"question": q.question.strip(), "answer": q.answer.strip().lower(), "type": q.type}
               for q in ann.qa],
    }


def process_chunk(root: str | Path, chunk: Chunk, cfg: IngestConfig, out_dir: str | Path) -> ChunkResult:
    """Turns one chunk of annotation lines into a sample shard and a reject shard.

    The sample shard is written last and carries the chunk's spec, so a rerun that finds it keeps it.
    """
    root, out_dir = Path(root), Path(out_dir)
    samples_path = out_dir / f"samples-{chunk.name}.parquet"
    rejects_path = out_dir / f"rejects-{chunk.name}.parquet"
    spec = {"chunk": asdict(chunk), "ingest": cfg.model_dump(mode="json")}
    if samples_path.exists() and rejects_path.exists() and read_metadata(samples_path).get("spec") == spec:
        meta = read_metadata(samples_path)
        return ChunkResult(chunk, str(samples_path), str(rejects_path), meta["accepted"], meta["rejected"], True)

    rows: list[dict] = []
    rejects: list[dict] = []
    for line in R.iter_lines(str(root / R.ANNOTATIONS), chunk.start, chunk.count, chunk.first):
        parsed = R.parse_line(line)
        result = parsed if isinstance(parsed, R.Rejection) else _accept(parsed, root, cfg)
        if isinstance(result, R.Rejection):
            rejects.append({**asdict(result), "record": line.number, "image_path": result.image})
        else:
            rows.append(result)
    for r in rejects:
        r.pop("image", None)
    write_table(rejects_path, pa.Table.from_pylist(rejects, schema=REJECTS))
    write_table(samples_path, pa.Table.from_pylist(rows, schema=SAMPLES),
                {"spec": spec, "accepted": len(rows), "rejected": len(rejects)})
    return ChunkResult(chunk, str(samples_path), str(rejects_path), len(rows), len(rejects), False)
