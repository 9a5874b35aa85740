"""`mm caption / ask / search / translate / generate` on bad files and options: one line naming the bad value
and what is allowed, exit 2, no traceback; what can be checked without the model is checked before it is
loaded. The model is the tiny untrained one, saved as registration logs it (tests/mmcore/test_pyfunc_model.py)."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.mmcore.test_pyfunc_model import save_model
from tests.mmcore.test_serving import png_header

NO_MODEL = ["--model", "/nonexistent/model"]  # loading it would exit 1: an exit 2 shows nothing was loaded


@pytest.fixture(scope="module")
def model(tiny_bundle, tmp_path_factory) -> list[str]:
    return ["--model", str(save_model(tiny_bundle, tmp_path_factory.mktemp("cli-model")))]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("files")
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 20, 20)).save(buf, format="PNG")
    made = {"good.png": buf.getvalue(), "truncated.png": buf.getvalue()[:70], "notes.png": b"just some text",
            "bomb.png": png_header(13_000, 13_000), "huge-bomb.png": png_header(20_000, 20_000)}
    for name, data in made.items():
        (tmp / name).write_bytes(data)
    return tmp


def _mm(*args: str):
    from flows.cli import app

    return CliRunner().invoke(app, list(args))


def _one_error_line(res, code: int = 2) -> str:
    assert res.exit_code == code, res.output
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stdout
    assert "Traceback" not in res.output
    return lines[0].removeprefix("error: ")


@pytest.mark.parametrize(("args", "message"), [
    (["search", "a red circle", "-k", "-1"], "-k must be an integer >= 1 (search results per text); got -1"),
    (["search", "a red circle", "-k", "0"], "-k must be an integer >= 1 (search results per text); got 0"),
    (["generate", "two", "--temperature", "0"], "--temperature must be a number >= 1e-06 (> 0; "),
    (["generate", "two", "--top-p", "1.5"], "--top-p must be a number > 0 and <= 1 "),
    (["generate", "two", "--top-k", "-3"], "--top-k must be an integer >= 0 "),
    (["generate", "two", "--seed", "-5"], "--seed must be an integer from -1 to "),
    (["generate", "two", "-n", "0"], "-n must be an integer >= 1 (texts to sample); got 0"),
    (["caption", "{files}/notes.png"], "{files}/notes.png is not an image file Pillow can read"),
    (["ask", "{files}/huge-bomb.png", "how many?"], "{files}/huge-bomb.png claims 400000000 pixels, a "
                                                    "decompression bomb Pillow refuses to open"),
    (["caption", "{files}/missing.png"], "{files}/missing.png is not a file"),
])
def test_bad_options_and_files_are_refused_before_the_model_is_loaded(files, args, message):
    args = [a.format(files=files) for a in args]
    assert _one_error_line(_mm(*args, *NO_MODEL)).startswith(message.format(files=files))


@pytest.mark.parametrize(("args", "message"), [
    (["translate", "a red circle", "--to", "fr"], "request 0: unknown language 'fr'; this model writes en, zh"),
    (["generate", "two", "--lang", "fr", "-n", "2"], "request 0: unknown language 'fr'; this model writes en, zh"),
    (["search", "a red circle", "-k", "4"], "param 'k' must be an integer from 1 to 3 (search results per text); "
                                            "got 4"),
    (["caption", "{files}/truncated.png"], "request 0: 'image' could not be decoded ("),
    (["caption", "{files}/bomb.png"], "request 0: 'image' is 13000 x 13000 = 169000000 pixels; at most 10000 "
                                      "allowed"),
    (["search", "x" * 51], "request 0: 'text' has 51 characters; at most 50 allowed"),
])
def test_what_only_the_model_knows_is_its_one_line_answer(model, files, args, message):
    res = _mm(*[a.format(files=files) for a in args], *model)
    assert _one_error_line(res).startswith(message)


def test_good_requests_are_answered(model, files):
    res = _mm("search", "a red circle", "-k", "2", *model)
    assert res.exit_code == 0 and res.stdout.count("images/") == 2, res.output
    res = _mm("caption", str(files / "good.png"), *model)
    assert res.exit_code == 0 and len(res.stdout.strip().splitlines()) == 1, res.output
    res = _mm("generate", "two", "-n", "2", "--seed", "1", "--lang", "zh", *model)
    assert res.exit_code == 0, res.output
