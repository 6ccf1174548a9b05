"""Encoders and decoders of logged media: PNG (images), WAV (audio), parquet (tables).

PNG and WAV are written with the standard library (zlib, wave), so logging images and
audio needs neither Pillow nor soundfile; Pillow is only used to read PNGs written by
others (figures rendered by matplotlib)."""

from __future__ import annotations

import io
import struct
import wave
import zlib
from typing import Any, NamedTuple

import numpy as np

from ..errors import InvalidInputError

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_COLOR = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (grey, RGB, RGBA)
_CHANNELS = {v: k for k, v in _COLOR.items()}


class Audio(NamedTuple):
    """Decoded audio: float32 samples in [-1, 1], shape (n,) or (n, channels)."""

    samples: np.ndarray
    sample_rate: int


# -- images ------------------------------------------------------------------------------
def _module(obj: Any) -> str:
    return type(obj).__module__.split(".", 1)[0]


# Snapshot buffers are recycled: a fresh 192 KiB array comes from mmap and costs ~50
# page faults on first touch, four times the copy itself. The worker gives each buffer
# back after encoding; at most POOL_PER_SHAPE wait per (shape, dtype).
POOL_PER_SHAPE = 16
_pool: dict[tuple, list[np.ndarray]] = {}


def _copy(a: np.ndarray) -> np.ndarray:
    free = _pool.get((a.shape, a.dtype.str))
    if free:
        try:
            buf = free.pop()
        except IndexError:  # emptied by another thread meanwhile
            return a.copy()
        np.copyto(buf, a)
        return buf
    return a.copy()


def recycle(a: Any) -> None:
    """Give a snapshot buffer back once it has been encoded."""
    if isinstance(a, np.ndarray) and a.base is None and a.flags.c_contiguous:
        free = _pool.setdefault((a.shape, a.dtype.str), [])
        if len(free) < POOL_PER_SHAPE:
            free.append(a)


def snapshot_image(img: Any, copy: bool = True) -> tuple[Any, str]:
    """What the caller's thread keeps of `img` (cheap: a copy or an immutable reference)
    and its layout hint ("chw" for torch tensors, "hwc" otherwise). Raises for types that
    are not images."""
    mod = _module(img)
    if isinstance(img, np.ndarray):
        if img.ndim not in (2, 3):
            raise InvalidInputError(
                f"img must have 2 (HW) or 3 (HWC/CHW) dimensions, got shape {img.shape}"
            )
        # a copy: training code often reuses the same buffer for the next batch
        return (_copy(img) if copy else img), "hwc"
    if mod == "torch":
        if img.ndim not in (2, 3):
            raise InvalidInputError(
                f"img must have 2 (HW) or 3 (CHW/HWC) dimensions, got shape {tuple(img.shape)}"
            )
        # clone is asynchronous on an accelerator; the copy to host happens on the worker
        return img.detach().clone(), "chw"
    if mod == "mlx":
        if img.ndim not in (2, 3):
            raise InvalidInputError(
                f"img must have 2 (HW) or 3 (HWC/CHW) dimensions, got shape {tuple(img.shape)}"
            )
        # MLX evaluates lazily on streams bound to the calling thread: evaluate here
        return np.array(img), "hwc"
    if mod == "PIL":
        return img.copy(), "hwc"
    raise InvalidInputError(
        "img must be a numpy array, a PIL image, or a torch/MLX tensor, "
        f"got {type(img).__module__}.{type(img).__name__}"
    )


def image_array(img: Any, layout: str = "hwc") -> np.ndarray:
    """An HW or HWC uint8 array from a snapshot taken by `snapshot_image`.

    Floats are read as [0, 1] (values outside are clipped); bool as 0/255."""
    mod = _module(img)
    if mod == "torch":
        img = img.cpu()
        if img.dtype.is_floating_point:
            img = img.float()
        img = img.numpy()
    elif mod == "mlx":
        img = np.array(img)
    elif mod == "PIL":
        if img.mode not in ("L", "RGB", "RGBA"):
            img = img.convert("RGBA" if "A" in img.mode else "RGB")
        img = np.asarray(img)
    a = np.asarray(img)
    if a.ndim == 3:
        if layout == "chw" and a.shape[0] in (1, 3, 4):
            a = np.moveaxis(a, 0, -1)
        elif a.shape[-1] not in (1, 3, 4) and a.shape[0] in (1, 3, 4):
            a = np.moveaxis(a, 0, -1)
        if a.shape[-1] not in (1, 3, 4):
            raise InvalidInputError(
                f"img has shape {a.shape}: expected 1, 3 or 4 channels first or last"
            )
        if a.shape[-1] == 1:
            a = a[..., 0]
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InvalidInputError(f"img is empty (shape {a.shape})")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer) and a.size and a.min() >= 0 and a.max() <= 255:
        return a.astype(np.uint8)
    raise InvalidInputError(
        f"img dtype {a.dtype} is not supported: use uint8 (0-255), float in [0, 1] or bool"
    )


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_png(a: np.ndarray, level: int = 4) -> bytes:
    """PNG bytes of an HW (grey) or HWC (RGB/RGBA) uint8 array."""
    h, w = a.shape[:2]
    ch = 1 if a.ndim == 2 else a.shape[2]
    rows = np.empty((h, 1 + w * ch), dtype=np.uint8)
    rows[:, 0] = 0  # filter type "none" on every row
    rows[:, 1:] = a.reshape(h, w * ch)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, _COLOR[ch], 0, 0, 0)
    return (
        _PNG_SIG
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), level))
        + _chunk(b"IEND", b"")
    )


def decode_png(data: bytes) -> np.ndarray:
    """The pixels of a PNG as HW or HWC uint8 (RGB/RGBA as stored)."""
    if not data.startswith(_PNG_SIG):
        raise InvalidInputError("not a PNG image")
    pos, idat, hdr = 8, [], None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        tag = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if tag == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat.append(body)
    if hdr is None:
        raise InvalidInputError("PNG without a header")
    w, h, depth, color, _, _, interlace = hdr
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    ch = _CHANNELS.get(color)
    if depth == 8 and ch is not None and not interlace:
        rows = raw.reshape(h, 1 + w * ch)
        if not rows[:, 0].any():  # every row unfiltered: what encode_png writes
            px = rows[:, 1:].reshape(h, w, ch)
            return px[..., 0].copy() if ch == 1 else px.copy()
    # any other PNG (filters, palettes, 16 bit): Pillow reads it
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


# -- audio -------------------------------------------------------------------------------
def audio_array(samples: Any) -> np.ndarray:
    """Samples as an (n,) or (n, channels) float32/int16 numpy array (a copy)."""
    if _module(samples) == "torch":
        samples = samples.detach().cpu().numpy()
    elif _module(samples) == "mlx":
        samples = np.array(samples)
    a = np.array(samples)  # a copy
    if a.ndim not in (1, 2) or a.shape[0] == 0:
        raise InvalidInputError(
            f"samples must be a non-empty array of shape (n,) or (n, channels), got {a.shape}"
        )
    if a.dtype != np.int16 and not np.issubdtype(a.dtype, np.floating):
        raise InvalidInputError(f"samples must be float in [-1, 1] or int16, got {a.dtype}")
    return a


def encode_wav(a: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV bytes (floats are clipped to [-1, 1])."""
    if a.dtype != np.int16:
        a = np.nan_to_num(a.astype(np.float64))
        a = np.round(np.clip(a, -1.0, 1.0) * 32767.0).astype(np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1 if a.ndim == 1 else a.shape[1])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(a.astype("<i2").tobytes())
    return buf.getvalue()


def decode_wav(data: bytes) -> Audio:
    """Samples (float32 in [-1, 1]) and sample rate of a 16-bit PCM WAV."""
    with wave.open(io.BytesIO(data), "rb") as w:
        ch, rate = w.getnchannels(), w.getframerate()
        raw = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    a = raw.astype(np.float32) / 32767.0
    return Audio(a if ch == 1 else a.reshape(-1, ch), rate)


# -- tables ------------------------------------------------------------------------------
def snapshot_table(frame: Any) -> Any:
    """A polars frame of `frame` (polars frames are immutable; pandas ones are copied)."""
    import polars as pl

    if isinstance(frame, pl.DataFrame):
        return frame
    if _module(frame) == "pandas" and hasattr(frame, "columns"):
        # from_pandas may share the numeric buffers; the caller may mutate the frame next
        return pl.from_pandas(frame.copy(deep=True))
    if isinstance(frame, dict):
        try:
            return pl.DataFrame(frame)
        except Exception as e:
            raise InvalidInputError(f"frame: a dict that is not a table ({e})") from None
    raise InvalidInputError(
        f"frame must be a polars or pandas DataFrame (or a dict of columns), "
        f"got {type(frame).__name__}"
    )


def encode_parquet(frame: Any) -> bytes:
    buf = io.BytesIO()
    frame.write_parquet(buf)
    return buf.getvalue()


def decode_parquet(data: bytes) -> Any:
    import polars as pl

    return pl.read_parquet(io.BytesIO(data))
