"""Images for `llava-hf serve`: fetch an `image_url` safely, then decode it within bounded memory.

Fetching: `data:` URLs (base64) always; http(s) URLs only when their host is in --allowed_image_hosts, without following
redirects (a redirect could lead an allowed host's URL to an internal address: server-side request forgery). Local
paths and file:// URLs are refused. The byte limit is checked before base64 decoding and while downloading.

Decoding: the size is read from the file header, before any pixel is decompressed, and refused when
- width x height exceeds --max_image_pixels (a 3 KB PNG can decode to gigabytes: a decompression bomb), or
- the aspect ratio exceeds MAX_ASPECT_RATIO (a 256:1 strip padded to a square is a 336x1 line to the vision tower).
LLaVA-1.5 then pads the image to a square of side max(w, h) (the "pad" aspect ratio), which for a 16384x64 strip would
be a 16384x16384 canvas. So an image whose longer side exceeds sqrt(--max_image_pixels) is first shrunk to that side:
the padded canvas is then never larger than the largest image the server accepts.
"""

import base64
import binascii
import io
import math
import urllib.parse
import urllib.request
import warnings

from PIL import Image

from llava_hf.processing import to_rgb
from llava_hf.serving.protocol import RequestError

IMAGE_FORMATS = ["PNG", "JPEG", "WEBP", "GIF", "BMP"]
# The bound transformers' Qwen2-VL image processor puts on |w/h| (`smart_resize`: "absolute aspect ratio must be
# smaller than 200").
MAX_ASPECT_RATIO = 200


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def image_bytes(url: str, max_bytes: int, allowed_hosts: list[str]) -> bytes:
    """The encoded bytes of an image_url: a base64 `data:` URL, or an http(s) URL on an allowed host."""
    if url.startswith("data:"):
        header, comma, data = url.partition(",")
        if not comma or not header.endswith(";base64"):
            raise RequestError(400, "a data: image URL must look like data:image/png;base64,<base64 data>.", "messages")
        media_type = header[len("data:") : -len(";base64")].lower()
        if not media_type.startswith("image/"):
            raise RequestError(415, f"data: URL media type {media_type!r} is not an image type.", "messages")
        if len(data) * 3 // 4 > max_bytes:
            raise RequestError(413, too_many_bytes(len(data) * 3 // 4, max_bytes), "messages")
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as error:
            raise RequestError(400, f"the data: URL is not valid base64 ({error}).", "messages") from error
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https"):
        raise RequestError(
            400,
            "image_url must be a data: URL or an http(s) URL; local paths and file:// URLs are refused.",
            "messages",
        )
    if parsed.hostname not in allowed_hosts:
        raise RequestError(
            400,
            f"remote image URLs are refused (host {parsed.hostname!r} is not allowed); send the image as a data: URL, "
            "or start the server with --allowed_image_hosts HOST.",
            "messages",
        )
    try:
        with urllib.request.build_opener(_NoRedirects).open(url, timeout=10) as response:
            data = response.read(max_bytes + 1)
    except OSError as error:
        raise RequestError(400, f"could not fetch image {url!r}: {error}", "messages") from error
    if len(data) > max_bytes:
        raise RequestError(413, too_many_bytes(len(data), max_bytes, at_least=True), "messages")
    return data


def too_many_bytes(size: int, max_bytes: int, at_least: bool = False) -> str:
    more = "more than " if at_least else ""
    return f"an image is {more}{size} bytes; the limit is {max_bytes} (--max_image_bytes)."


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode to RGB after checking the header's size; shrink so that padding to a square stays within `max_pixels`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            width, height = image.size
            check_size(width, height, max_pixels)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise RequestError(413, f"image refused as a decompression bomb: {error}", "messages") from error
    except (OSError, SyntaxError, ValueError) as error:  # PIL reports corrupt files with all three
        raise RequestError(
            400, f"an image could not be decoded ({error}); send PNG, JPEG, WEBP, GIF or BMP.", "messages"
        ) from error
    image = to_rgb(image)
    longest = math.isqrt(max_pixels)
    if max(image.size) > longest:
        scale = longest / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return image


def check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise RequestError(
            413,
            f"an image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} (--max_image_pixels).",
            "messages",
        )
    if max(width, height) > MAX_ASPECT_RATIO * max(min(width, height), 1):
        raise RequestError(
            400,
            f"an image is {width}x{height}, an aspect ratio over {MAX_ASPECT_RATIO}:1; crop it to the part that "
            "matters.",
            "messages",
        )
