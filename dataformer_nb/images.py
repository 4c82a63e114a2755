"""Images in requests: their size read from their header, their tokens counted as providers bill
them, a short description for tables and the panel, and content parts made from local files.

Token counts (what rate limits and plans use before a reply says the real usage):

- OpenAI's ``image_url`` parts (OpenAI and every OpenAI-compatible server): ``detail: "low"`` is
  85 tokens; otherwise the image is scaled to fit 2048x2048, then its shortest side to 768 px,
  and costs 85 + 170 per 512 px tile (OpenAI's vision guide, "Calculating costs", for the
  GPT-4o and GPT-4.1 families; the smaller models' patch-based counts differ and are not modelled).
- Anthropic's ``image`` blocks: width x height / 750, after scaling the long edge to 1568 px and
  capping at about 1,600 tokens (Anthropic's vision guide, "Calculate image costs").
- An image whose size cannot be read here (an http URL, an unknown format) counts as a 1024 x
  1024 one: 765 tokens (OpenAI), 1,398 (Anthropic).

Base64 image data counted as text had read a 1 MB image as ~350,000 tokens against a TPM limit.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import struct
from collections.abc import Mapping
from typing import Any

from .errors import ConfigurationError

UNKNOWN_SIZE = (1024, 1024)
_MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}


def image_format(data: bytes) -> str | None:
    """"png", "jpeg", "gif" or "webp" by the file's first bytes; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the header of a PNG, JPEG, GIF or WebP image; None if ``data``
    is none of those or its header is cut short or garbled."""
    try:
        kind = image_format(data)
        if kind == "png" and data[12:16] == b"IHDR":
            return _positive(struct.unpack(">II", data[16:24]))
        if kind == "gif":
            return _positive(struct.unpack("<HH", data[6:10]))
        if kind == "webp":
            return _webp_size(data)
        if kind == "jpeg":
            return _jpeg_size(data)
    except struct.error:
        return None
    return None


def _positive(size: tuple[int, ...]) -> tuple[int, int] | None:
    width, height = size
    return (width, height) if width > 0 and height > 0 else None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return _positive((width & 0x3FFF, height & 0x3FFF))
    if chunk == b"VP8L":
        b = data[21:25]
        if len(b) < 4:
            return None
        return (1 + (b[0] | (b[1] & 0x3F) << 8), 1 + (b[1] >> 6 | b[2] << 2 | (b[3] & 0x0F) << 10))
    if chunk == b"VP8X":
        w, h = data[24:27], data[27:30]
        if len(h) < 3:
            return None
        return (1 + int.from_bytes(w, "little"), 1 + int.from_bytes(h, "little"))
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 9 < len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2:at + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return _positive((width, height))
        at += 2 + length
    return None


def _data_url_bytes(url: str) -> bytes | None:
    """The bytes of a ``data:image/...;base64,`` URL; None for any other URL or bad base64."""
    if not url.startswith("data:"):
        return None
    header, _, payload = url.partition(",")
    return _b64(payload) if header.endswith(";base64") else None


def _b64(payload: Any) -> bytes | None:
    if not isinstance(payload, str):
        return None
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError):
        return None


def _image_of(part: Mapping[str, Any]) -> tuple[str, bytes | None, str | None] | None:
    """("openai" or "anthropic", the image's bytes if inline, its URL if linked) of an image
    content part; None if ``part`` is not one."""
    kind = part.get("type")
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else image
        if not isinstance(url, str):
            return None
        return "openai", _data_url_bytes(url), None if url.startswith("data:") else url
    if kind == "image":
        source = part.get("source")
        if not isinstance(source, Mapping):
            return None
        if source.get("type") == "base64":
            return "anthropic", _b64(source.get("data")), None
        url = source.get("url")
        return "anthropic", None, url if isinstance(url, str) else None
    return None


def is_image_part(part: Any) -> bool:
    """Whether ``part`` is an image content part (OpenAI's ``image_url`` or Anthropic's ``image``)."""
    return isinstance(part, Mapping) and _image_of(part) is not None


def image_tokens(part: Mapping[str, Any]) -> int:
    """The prompt tokens the provider bills for the image ``part`` (see the module's docstring)."""
    found = _image_of(part)
    if found is None:
        return 0
    style, data, _ = found
    size = (image_size(data) if data is not None else None) or UNKNOWN_SIZE
    if style == "anthropic":
        return anthropic_image_tokens(*size)
    image = part.get("image_url")
    detail = image.get("detail") if isinstance(image, Mapping) else None
    return openai_image_tokens(*size, detail=detail if isinstance(detail, str) else "auto")


def openai_image_tokens(width: int, height: int, detail: str = "auto") -> int:
    """OpenAI's count for a ``width`` x ``height`` image (GPT-4o and GPT-4.1 families)."""
    if detail == "low":
        return 85
    fit = min(1.0, 2048 / max(width, height))
    scale = fit * min(1.0, 768 / (min(width, height) * fit))
    return 85 + 170 * math.ceil(width * scale / 512) * math.ceil(height * scale / 512)


def anthropic_image_tokens(width: int, height: int) -> int:
    """Anthropic's count for a ``width`` x ``height`` image (long edge scaled to 1568 px, ~1,600 at most)."""
    scale = min(1.0, 1568 / max(width, height))
    return min(1600, math.ceil(width * scale * height * scale / 750))


def describe_image(part: Mapping[str, Any]) -> str:
    """``[image 512x512]`` (or ``[image https://...]``, ``[image]``): what tables and the panel
    show instead of an image's base64 data."""
    found = _image_of(part)
    if found is None:
        return ""
    _, data, url = found
    size = image_size(data) if data is not None else None
    if size is not None:
        return f"[image {size[0]}x{size[1]}]"
    return f"[image {url[:80]}]" if url else "[image]"


def content_text(content: Any) -> str:
    """A message's content as text for display: text parts as they are, images described."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        shown = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                shown.append(part["text"])
            elif is_image_part(part):
                shown.append(describe_image(part))
        return " ".join(shown)
    return "" if content is None else str(content)


def image_part(image: Any, *, detail: str = "auto", style: str = "openai") -> dict[str, Any]:
    """A content part holding ``image`` (a path to a PNG, JPEG, GIF or WebP file, its bytes, or a
    PIL image), inline as base64: OpenAI's ``image_url`` part (``detail``: "auto", "low" or
    "high"), or with ``style="anthropic"`` Anthropic's ``image`` block. Put it in a message's
    content list beside a ``{"type": "text", ...}`` part. ConfigurationError for a file that is
    not one of those formats, or a missing one."""
    data = _image_bytes(image)
    kind = image_format(data)
    if kind is None:
        raise ConfigurationError(f"image_part({_shown(image)}): not a PNG, JPEG, GIF or WebP image: convert it to "
                                 "one of those (PIL: image.save(path, 'PNG'))")
    if detail not in ("auto", "low", "high"):
        raise ConfigurationError(f"detail={detail!r} must be 'auto', 'low' or 'high'")
    encoded = base64.b64encode(data).decode()
    if style == "anthropic":
        return {"type": "image", "source": {"type": "base64", "media_type": _MEDIA_TYPES[kind], "data": encoded}}
    if style != "openai":
        raise ConfigurationError(f"style={style!r} must be 'openai' (image_url parts, for OpenAI-compatible servers) "
                                 "or 'anthropic'")
    return {"type": "image_url", "image_url": {"url": f"data:{_MEDIA_TYPES[kind]};base64,{encoded}",
                                               "detail": detail}}


def _image_bytes(image: Any) -> bytes:
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        try:
            with open(image, "rb") as f:
                return f.read()
        except OSError as exc:
            raise ConfigurationError(f"image_part({_shown(image)}): cannot be read ({exc.strerror})") from None
    if hasattr(image, "save") and hasattr(image, "size"):  # a PIL image
        import io

        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    raise ConfigurationError(f"image_part({_shown(image)}): give a file path, the image's bytes or a PIL image")


def _shown(image: Any) -> str:
    return repr(os.fspath(image)) if isinstance(image, (str, os.PathLike)) else type(image).__name__
