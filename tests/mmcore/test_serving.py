"""The served model's contract and routing (`answer_requests`), over real (tiny, untrained) predictors: each
request gets the answer its task's predictor method gives, in order; a bad request is refused with one
short line naming the bad value and what is allowed, before anything in it is decoded or run."""

from __future__ import annotations

import base64
import io
import json
import math
import struct
import time
import zlib
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image, ImageFile

from mmcore.catalog import BundleDir
from mmcore.config import IngestConfig, ServingConfig
from mmcore.inference import Predictor
from mmcore.io import read_json
from mmcore.serving import (
    COLUMNS,
    PARAMS,
    TASKS,
    BadRequest,
    Contract,
    Limits,
    answer_requests,
    check_params,
    check_requests,
    load_predictor,
)

LIMITS = Limits(max_rows=4, max_text_chars=50, max_image_bytes=5000, max_image_pixels=100 * 100, max_k=3)


def png(colour: tuple[int, int, int] = (10, 200, 10), size: tuple[int, int] = (32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height 8-bit grey pixels, with 16 rows of data: a bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1) * 16, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


GREEN, RED = png(), png((200, 10, 10))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def full_bundle(tiny_bundle: Path, out: Path, limits: Limits | None = LIMITS) -> Path:
    """The tiny bundle plus (untrained) translation and generation heads for en and zh, with `limits`."""
    from mmcore.models.builders import build_generator, build_translator
    from mmcore.stages.package import write_bundle
    from mmcore.training.heads import load_heads, save_heads

    src = BundleDir(tiny_bundle)
    heads = load_heads(src.heads, torch.device("cpu"))
    torch.manual_seed(0)
    heads.translator, heads.generator = build_translator(heads.dims, 2), build_generator(heads.dims, 2)
    heads.text_langs = ["en", "zh"]
    out.mkdir(parents=True, exist_ok=True)
    save_heads(heads, out / "heads.part")
    meta = {**read_json(src.meta), **({"serving": limits.as_meta()} if limits else {})}
    return write_bundle(BundleDir(out / "bundle"), src.encoder, out / "heads.part", src.tokenizer,
                        pq.read_table(src.index), meta).path


@pytest.fixture(scope="module")
def predictor(tiny_bundle, tmp_path_factory) -> Predictor:
    """Every head, and the small `LIMITS`."""
    return load_predictor(full_bundle(tiny_bundle, tmp_path_factory.mktemp("full")))


def test_mixed_requests_come_back_in_order(predictor):
    question = "what color is the circle?"
    out = answer_requests(predictor, pd.DataFrame([
        {"task": "search", "text": "a red circle"},
        {"task": "caption", "image": b64(GREEN)},
        {"task": "ask", "image": b64(RED), "question": question},
        {"task": "caption", "image": b64(RED)},
    ]), {"k": 2})
    assert tuple(out.columns) == COLUMNS and len(out) == 4
    found = predictor.search(["a red circle"], 2)[0]
    assert json.loads(out["matches"][0]) == [vars(m) for m in found] and len(found) == 2
    assert (out["answer"][0], out["score"][0]) == (found[0].image_path, pytest.approx(found[0].score))
    assert out["answer"][0].startswith("images/")
    assert [out["answer"][1], out["answer"][3]] == predictor.caption([GREEN, RED])  # one batch, in request order
    assert math.isnan(out["score"][1]) and out["matches"][1] == "[]"
    answer, p = predictor.answer([RED], [question])[0]
    assert (out["answer"][2], out["score"][2]) == (answer, pytest.approx(p))
    assert answer in {"red", "blue", "2"} and 0.0 < p <= 1.0


def test_translate_and_generate_are_batched_per_language(predictor):
    rows = pd.DataFrame([{"task": "translate", "text": "two shapes", "lang": "zh"},
                         {"task": "generate", "text": "a red", "lang": "en"},
                         {"task": "translate", "text": "a red circle", "lang": "en"}])
    out = answer_requests(predictor, rows, {"seed": 3, "temperature": 0.5, "top_k": 5, "top_p": 0.9})
    assert out["answer"][0] == predictor.translate(["two shapes"], "zh")[0]
    assert out["answer"][2] == predictor.translate(["a red circle"], "en")[0]
    assert out["answer"][1] == predictor.generate(["a red"], "en", 0.5, 5, 0.9, seed=3)[0]


def test_tasks_are_the_five_the_model_serves():
    assert TASKS == ("caption", "ask", "search", "translate", "generate")


def test_limits_default_to_ingests_and_travel_in_the_bundle_meta(predictor, tiny_bundle):
    assert Limits.from_config(ServingConfig(), IngestConfig(max_text_chars=77, max_side=300)) == Limits(
        max_rows=256, max_text_chars=77, max_image_bytes=20_000_000, max_image_pixels=90_000, max_k=100)
    assert Limits.from_config(ServingConfig(max_text_chars=5, max_image_pixels=9), IngestConfig()).as_meta() == {
        "max_rows": 256, "max_text_chars": 5, "max_image_bytes": 20_000_000, "max_image_pixels": 9, "max_k": 100}
    assert Contract.of(predictor) == Contract(LIMITS, TASKS, ("en", "zh"))
    assert predictor.max_image_pixels == LIMITS.max_image_pixels  # the predictor itself decodes no more
    old = Predictor(tiny_bundle)  # a bundle from before limits: the default config's, and no translation heads
    assert Contract.of(old) == Contract(Limits.from_config(ServingConfig(), IngestConfig()),
                                        ("caption", "ask", "search"), ())
    with pytest.raises(ValueError, match=r"\['max_pixels'\] are unknown"):
        Limits.from_meta({"serving": {"max_pixels": 5}})


def test_params_are_checked_and_filled_with_their_defaults():
    assert check_params(None) == {name: p.default for name, p in PARAMS.items()}
    assert check_params({"k": 3, "temperature": 2, "seed": 0}, LIMITS) == {
        "k": 3, "temperature": 2.0, "top_k": 0, "top_p": 1.0, "seed": 0}
    assert check_params({"k": 10_000})["k"] == 10_000  # without a model's limits, k has no maximum


LONG = "a " * 10_000_000  # 20 MB
TRUNCATED = GREEN[: len(GREEN) // 2]


@pytest.mark.parametrize(("rows", "params", "message"), [
    ([{"task": "search", "text": "x"}] * 5, None, r"^5 requests in one call; at most 4 allowed$"),
    ([{"task": "search", "text": LONG}], None,
     r"^request 0: 'text' has 20000000 characters; at most 50 allowed$"),
    ([{"task": "ask", "image": b64(GREEN), "question": "q" * 51}], None, r"'question' has 51 characters; at most 50"),
    ([{"task": "search", "text": ["a", "b"]}], None, r"^request 0: 'text' must be a string or null; got list"),
    ([{"task": "search", "text": "x"}, {"task": 3}], None, r"^request 1: 'task' must be a string or null; got int 3"),
    ([{"task": "search", "text": "x", "foo": 1}], None, r"unknown or repeated column\(s\) \['foo'\]; requests have "
                                                         r"the columns task, image, question, text, lang"),
    ([{"text": "x"}], None, r"^requests need a 'task' column: one of caption, ask, search, translate, generate$"),
    ([{"task": None, "text": "x"}], None, r"^request 0: 'task' is missing; choose from caption, ask"),
    ([{"task": "summarize", "text": "x"}], None, r"^request 0: unknown task 'summarize'; choose from caption, ask"),
    ([{"task": "s" * 45, "text": "x"}], None, r"unknown task 'ss.*ss' \(45 characters\); choose"),
    ([{"task": "translate", "text": "x"}], None, r"^request 0: a translate request needs 'lang'$"),
    ([{"task": "ask", "image": b64(GREEN)}], None, r"^request 0: a ask request needs 'question'$"),
    ([{"task": "translate", "text": "x", "lang": "fr"}], None,
     r"^request 0: unknown language 'fr'; this model writes en, zh$"),
    ([{"task": "caption", "image": "%%% not base64"}], None, r"^request 0: 'image' must be the base64 of an image"),
    ([{"task": "caption", "image": "A" * 6672}], None,
     r"^request 0: 'image' is 6672 characters of base64 \(about 5004 bytes\); at most 5000 bytes allowed$"),
    ([{"task": "caption", "image": b64(b"\x89PNG" + bytes(4997))}], None,
     r"^request 0: 'image' is 5001 bytes; at most 5000 bytes allowed$"),
    ([{"task": "caption", "image": b64(b"plain text, not an image")}], None,
     r"^request 0: 'image' is not an image file Pillow can read"),
    ([{"task": "caption", "image": b64(GREEN)}, {"task": "caption", "image": b64(TRUNCATED)}], None,
     r"^request 1: 'image' could not be decoded \(.*truncated"),
    ([{"task": "caption", "image": b64(png(size=(101, 100)))}], None,
     r"^request 0: 'image' is 101 x 100 = 10100 pixels; at most 10000 allowed$"),
    ([{"task": "search", "text": "x"}], {"kk": 1}, r"^unknown param\(s\) \['kk'\]; this model takes k, temperature, "
                                                   r"top_k, top_p, seed$"),
    ([{"task": "search", "text": "x"}], {"k": -1}, r"^param 'k' must be an integer from 1 to 3 .*; got -1$"),
    ([{"task": "search", "text": "x"}], {"k": 4}, r"^param 'k' must be an integer from 1 to 3 .*; got 4$"),
    ([{"task": "search", "text": "x"}], {"k": "3"}, r"^param 'k' must be an integer .*; got '3'$"),
    ([{"task": "search", "text": "x"}], {"k": 2.0}, r"^param 'k' must be an integer .*; got 2.0$"),
    ([{"task": "search", "text": "x"}], {"temperature": 0}, r"^param 'temperature' must be a number >= 1e-06 \(> 0"),
    ([{"task": "search", "text": "x"}], {"temperature": math.inf}, r"^param 'temperature' must be .*; got inf$"),
    ([{"task": "search", "text": "x"}], {"top_p": 0}, r"^param 'top_p' must be a number > 0 and <= 1 "),
    ([{"task": "search", "text": "x"}], {"top_p": 1.5}, r"^param 'top_p' must be a number > 0 and <= 1 .*; got 1.5"),
    ([{"task": "search", "text": "x"}], {"top_k": -1}, r"^param 'top_k' must be an integer >= 0 "),
    ([{"task": "search", "text": "x"}], {"seed": -2}, r"^param 'seed' must be an integer from -1 to "),
    ([{"task": "search", "text": "x"}], {"seed": None}, r"^param 'seed' must be .*; got None$"),
    ([{"task": "search", "text": "x"}], ["k"], r"^params must be a mapping of name to value; got list$"),
])
def test_bad_requests_get_one_short_line_naming_the_problem(predictor, rows, params, message):
    started = time.monotonic()
    with pytest.raises(BadRequest, match=message) as err:
        answer_requests(predictor, pd.DataFrame(rows), params)
    assert "\n" not in str(err.value) and len(str(err.value)) <= 300
    assert time.monotonic() - started < 2  # refused before any work (a 20 MB text took 20 s to tokenise)


@pytest.mark.parametrize(("image", "message"), [
    (png_header(13_000, 13_000), r"is 13000 x 13000 = 169000000 pixels; at most 10000 allowed$"),  # the 0.9 MB PNG
    (png_header(20_000, 20_000), r"claims 400000000 pixels, a decompression bomb Pillow refuses to open; at most "
                                 r"10000 pixels allowed$"),
])
def test_a_decompression_bomb_is_refused_from_its_header_never_decoded(predictor, monkeypatch, image, message):
    def no_decoding(self):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert len(image) < 1000
    with pytest.raises(BadRequest, match=r"^request 0: 'image' " + message):
        answer_requests(predictor, pd.DataFrame([{"task": "caption", "image": b64(image)}]))


def test_a_model_without_a_head_refuses_its_task_by_name(tiny_bundle):
    with pytest.raises(BadRequest, match=r"^request 0: task 'generate' is not one this model serves; choose from "
                                         r"caption, ask, search$"):
        answer_requests(Predictor(tiny_bundle), pd.DataFrame([{"task": "generate", "text": "x", "lang": "en"}]))


def test_the_contract_checks_without_decoding_anything(predictor):
    contract = Contract.of(predictor)
    check_requests(pd.DataFrame([{"task": "caption", "image": "not even base64"}]), contract)  # answering checks it
    check_requests(pd.DataFrame(columns=["task"]), contract)  # no requests, no answers
    assert answer_requests(predictor, pd.DataFrame(columns=["task"])).empty
    with pytest.raises(BadRequest, match="requests must be a table"):
        check_requests([{"task": "search"}], contract)


def test_params_as_keywords_as_models_registered_before_the_contract_pass_them(predictor):
    search = pd.DataFrame([{"task": "search", "text": "a red circle"}])
    # their entry point called answer_requests(predictor, model_input, **params): their code travels with them
    assert answer_requests(predictor, search, k=2, seed=-1).equals(answer_requests(predictor, search, {"k": 2}))
    with pytest.raises(BadRequest, match=r"^param 'k' must be an integer from 1 to 3 .*; got 5$"):
        answer_requests(predictor, search, k=5)
