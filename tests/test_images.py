"""Images in requests (issue 28): sizes read from real files' headers, tokens counted as the
providers bill them (not their base64 as text), ``[image WxH]`` where prompts are shown, and
``image_part`` for local files and PIL images."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataformer_nb import ConfigurationError, image_part
from dataformer_nb.images import anthropic_image_tokens, image_size, image_tokens, openai_image_tokens
from dataformer_nb.limits import estimate_request_tokens

Image = pytest.importorskip("PIL.Image")


def encoded(size: tuple[int, int], fmt: str, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, (200, 30, 30) if mode == "RGB" else 0).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
@pytest.mark.parametrize("size", [(1, 1), (512, 512), (1600, 900), (37, 4000)])
def test_the_size_of_real_images_is_read_from_their_header(fmt: str, size: tuple[int, int]) -> None:
    assert image_size(encoded(size, fmt)) == size


def test_lossless_and_extended_webp_and_progressive_jpeg_too() -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (300, 200)).save(buffer, format="WEBP", lossless=True)
    assert image_size(buffer.getvalue()) == (300, 200)
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480)).save(buffer, format="JPEG", progressive=True, exif=b"Exif\x00\x00" + b"\x00" * 300)
    assert image_size(buffer.getvalue()) == (640, 480)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=64), st.binary(max_size=40).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
                 st.binary(max_size=60).map(lambda b: b"\xff\xd8" + b),
                 st.binary(max_size=30).map(lambda b: b"RIFF\x00\x00\x00\x00WEBP" + b)))
def test_any_bytes_give_a_size_or_none_never_an_error(data: bytes) -> None:
    size = image_size(data)
    assert size is None or (size[0] > 0 and size[1] > 0)


def test_token_counts_follow_the_providers_published_examples() -> None:
    # OpenAI's vision guide: 1024x1024 high = 765; 2048x4096 high = 1105; low = 85 whatever the size
    assert openai_image_tokens(1024, 1024) == 765 and openai_image_tokens(2048, 4096, "high") == 1105
    assert openai_image_tokens(4096, 4096, "low") == 85 and openai_image_tokens(100, 100) == 255
    # Anthropic's vision guide: 200x200 ~54, 1000x1000 ~1334, 1092x1092 ~1590; larger ones scaled
    assert [anthropic_image_tokens(n, n) for n in (200, 1000, 1092)] == [54, 1334, 1590]
    assert anthropic_image_tokens(4000, 3000) <= 1600


def test_a_large_image_counts_its_billed_tokens_not_its_base64_as_text() -> None:
    photo = encoded((1024, 1024), "PNG") + b"\x00" * 1_000_000  # a 1 MB file (trailing bytes, same header)
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(photo).decode()}}
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}]}
    assert 765 <= estimate_request_tokens(body) < 800  # was ~335,000: the base64 read as text
    block = image_part(encoded((1000, 1000), "JPEG"), style="anthropic")
    assert image_tokens(block) == 1334
    linked = {"type": "image_url", "image_url": {"url": "https://example.org/cat.png"}}
    assert image_tokens(linked) == 765  # its size is unknown here: counted as 1024x1024


def test_image_part_reads_files_bytes_and_pil_images_and_refuses_what_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(encoded((64, 32), "PNG"))
    part = image_part(path, detail="low")
    assert part["image_url"]["detail"] == "low" and part["image_url"]["url"].startswith("data:image/png;base64,")
    assert image_part(str(path)) == image_part(path.read_bytes())
    assert image_size(base64.b64decode(image_part(Image.new("RGB", (7, 9)))["image_url"]["url"].split(",")[1])) \
        == (7, 9)
    block = image_part(encoded((5, 5), "GIF"), style="anthropic")
    assert block["source"]["media_type"] == "image/gif" and block["type"] == "image"
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ConfigurationError, match=r"notes.txt.*not a PNG, JPEG, GIF or WebP"):
        image_part(tmp_path / "notes.txt")
    with pytest.raises(ConfigurationError, match="cannot be read"):
        image_part(tmp_path / "missing.png")
    with pytest.raises(ConfigurationError, match="detail='huge'"):
        image_part(path, detail="huge")


def test_an_image_request_is_sent_under_a_tpm_limit_cached_and_shown_as_its_size(make_llm, server) -> None:
    photo = encoded((512, 512), "PNG") + b"\x00" * 30_000
    requests = [{"messages": [{"role": "user", "content": [{"type": "text", "text": f"Describe {i}"},
                                                           image_part(photo)]}]} for i in range(5)]
    llm = make_llm(max_tokens_per_minute=5000, max_wait=5)  # 5 x ~100,000 tokens as text would never fit
    results = llm.generate(requests, project_name="pictures")
    assert all(r.error is None for r in results), "\n".join(str(r.error) for r in results)
    frame = results.to_pandas()
    assert list(frame["prompt"]) == [f"Describe {i} [image 512x512]" for i in range(5)]
    [entry, *_] = llm.cache.entries("pictures")
    assert entry.prompt.endswith("[image 512x512]") and "base64" not in entry.prompt
    assert json.loads(json.dumps(results.to_records()))  # the export keeps the request whole


def test_the_echo_provider_echoes_an_image_as_its_size_and_counts_it_as_billed(tmp_path: Path) -> None:
    from dataformer_nb import AsyncLLM

    request = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Describe"},
                                                         image_part(encoded((512, 512), "PNG") + b"\x00" * 50_000)]}]}
    [result] = AsyncLLM(api_provider="echo", cache_dir=tmp_path, progress=False, verbose=False).generate([request])
    assert result.text == "Echo: Describe [image 512x512]"
    assert result.usage["prompt_tokens"] == 2 + 255  # "Describe" and a 512x512 image (one tile)
