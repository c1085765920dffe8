"""How an image column becomes a CNN's fixed (channels, height, width) input: PNG/JPEG bytes
decoded and normalised with Pillow, or a fixed-shape numeric array column normalised the same
way. The image family scores with these functions and ``leanscore compress`` decodes its
training, calibration and evaluation images with them (``image_batch``), so the model is
trained, calibrated and scored on identical tensors.

Decoding (``decode_images``): 8-bit images only (a 16-bit or float image is a bad row, not
silently clipped); an image whose header declares more than ``MAX_PIXELS`` pixels is a bad row
before any pixel is decoded (a few hundred bytes of PNG can unpack to gigabytes: a
"decompression bomb"); grayscale (1 channel) or RGB (3) conversion (an alpha channel is
dropped) unless the manifest's ``convert`` is false (then an image of another mode is a bad
row), a resize to the declared size when the manifest allows it, 8-bit values scaled to
[0, 1], then ``(x - mean) / std`` per channel, batched as one float32 (n, C, H, W) array. A
null image, bytes Pillow cannot decode (its reason is kept; a truncated file among them), or
an image of another size when resizing is off makes the row bad; the kernel's ``bad_rows``
policy decides what follows, as for tabular rows. An array column is read by the tabular code
(nulls, NaN, wrong lengths) and then normalised the same way.

Torch-free, and imported only by the image family and the compress side's table reader:
executors scoring other families never load Pillow.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Sequence

import numpy as np
from leanscore.compression.artifact import FeatureSpec, ImageSpec
from leanscore.compression.tabular_inputs import Batch, from_array
from PIL import Image

try:  # optional (leanscore[images]): a faster decoder of the common case, see _png_as_is
    import pyspng as _spng
except ImportError:  # pragma: no cover - Pillow decodes everything without it
    _spng = None

_MODES = {1: "L", 3: "RGB"}
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
# Pillow names the file object in some messages ("cannot identify image file <_io.BytesIO
# object at 0x7f...>"): an address differs from call to call, so it is left out.
_FILE_OBJECT = re.compile(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>")
# The most pixels an image's header may declare: 16.7 million (4096 x 4096, 16 MB as 8-bit
# grayscale), far above any model input, far below what exhausts a Python worker's memory.
MAX_PIXELS = 4096 * 4096
# Pillow warns on opening an image over its own 89-million-pixel limit; this module refuses
# such images by their header itself (MAX_PIXELS, a lower bound), so the warning says nothing new.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def _is_null(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types (IHDR) that are exactly the model's mode, so no conversion is needed.
_PNG_COLOUR_TYPES = {1: 0, 3: 2}  # grayscale, truecolour


def _png_as_is(data, spec: ImageSpec) -> np.ndarray | None:
    """An 8-bit PNG already of the model's size and mode, decoded by libspng (pyspng: about 3x
    Pillow's images/s on 28x28 photos, measured); None for anything else (another format,
    size, mode or depth, a broken file, pyspng not installed): Pillow then decodes or names
    the reason. Lossless decoding: both give the same pixels."""
    if _spng is None or len(data) < 26 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if (width, height) != (spec.width, spec.height) or data[24] != 8:
        return None
    if data[25] != _PNG_COLOUR_TYPES[spec.channels]:
        return None
    try:
        pixels = _spng.load(bytes(data))
    except Exception:  # noqa: BLE001 - a broken file: Pillow names what is wrong
        return None
    return pixels.reshape(spec.height, spec.width, spec.channels)


def _decode_one(data, spec: ImageSpec) -> np.ndarray | str:
    """One image's (H, W, C) uint8 pixels, or why it cannot be the model's input."""
    fast = _png_as_is(data, spec)
    if fast is not None:
        return fast
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            if image.width * image.height > MAX_PIXELS:
                return (
                    f"holds a {image.width}x{image.height} image ({image.width * image.height:,} "
                    f"pixels by its header, over the {MAX_PIXELS:,} decoded per image: a "
                    "decompression bomb?); it was not decoded: resize such images before scoring"
                )
            if image.mode in ("I", "F") or image.mode.startswith("I;"):
                return (
                    f"holds a {image.mode} image (16-bit or float pixels); the model reads 8-bit "
                    "images: convert them to 8 bits first"
                )
            if image.size != (spec.width, spec.height) and not spec.resize:
                return (
                    f"holds a {image.width}x{image.height} image, the model expects "
                    f"{spec.width}x{spec.height} (width x height); resize the images first or "
                    "compress with image.resize: true"
                )
            if image.mode != _MODES[spec.channels] and not spec.convert:
                return (
                    f"holds a {image.mode} image, the model reads {_MODES[spec.channels]} "
                    f"({spec.channels} channel(s)); convert the images first or compress with "
                    "image.convert: true"
                )
            converted = image.convert(_MODES[spec.channels])
            if converted.size != (spec.width, spec.height):
                converted = converted.resize((spec.width, spec.height), _RESAMPLE[spec.resample])
            return np.asarray(converted, dtype=np.uint8).reshape(
                spec.height, spec.width, spec.channels
            )
    except Exception as err:  # noqa: BLE001 - Pillow's decoders raise many types
        text = _FILE_OBJECT.sub("", str(err)).strip().splitlines()
        reason = text[0] if text else type(err).__name__
        return f"is not a decodable image ({reason})"


def normalise(pixels: np.ndarray, spec: ImageSpec, *, eight_bit: bool) -> np.ndarray:
    """(n, C, H, W) values (divided by 255 when ``eight_bit``), then ``(x - mean) / std`` per
    channel, as a new C-contiguous float32 array; the input is never written to (it may be an
    Arrow buffer). The arithmetic is torchvision's ``ToTensor`` then ``Normalize``, in float32,
    so a model trained with those sees the same values."""
    out = np.array(pixels, dtype=np.float32, order="C")
    if eight_bit:
        out /= np.float32(255.0)
    if spec.mean is not None:
        out -= np.asarray(spec.mean, dtype=np.float32)[None, :, None, None]
    if spec.std is not None:
        out /= np.asarray(spec.std, dtype=np.float32)[None, :, None, None]
    return out


def decode_images(values: Sequence, column: str, spec: ImageSpec) -> Batch:
    """PNG/JPEG bytes (None for a null) -> the model's (n, C, H, W) float32 input; bad rows
    hold zeros and name ``column`` and the reason."""
    n = len(values)
    pixels = np.zeros((n, spec.height, spec.width, spec.channels), dtype=np.uint8)
    bad = np.zeros(n, dtype=bool)
    reasons: list[str | None] = [None] * n
    for i, data in enumerate(values):
        decoded = "is null" if _is_null(data) else _decode_one(data, spec)
        if isinstance(decoded, str):
            bad[i] = True
            reasons[i] = f"column {column!r} {decoded}"
        else:
            pixels[i] = decoded
    matrix = normalise(pixels.transpose(0, 3, 1, 2), spec, eight_bit=True)
    matrix[bad] = 0.0
    return Batch(matrix, bad, reasons)


def from_array_batch(batch: Batch, spec: ImageSpec) -> Batch:
    """A tabular (n, C*H*W) batch of pixels scaled to [0, 1] -> normalised (n, C, H, W)."""
    shaped = batch.matrix.reshape(len(batch.matrix), *spec.shape)
    matrix = normalise(shaped, spec, eight_bit=False)
    matrix[batch.bad] = 0.0
    return Batch(matrix, batch.bad, batch.reasons)


def image_batch(values, features: FeatureSpec) -> Batch:
    """The model's input from one pandas Series (or a list) of the input column: what the
    pandas path and ``leanscore compress`` build."""
    spec = features.image
    if features.image_column is not None:
        return decode_images(list(values), features.image_column, spec)
    return from_array_batch(from_array(values, features.array_column, features.size), spec)
