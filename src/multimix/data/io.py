"""Reading and writing chest X-ray images and masks.

Every image enters the library through :func:`read_image`, which turns PNG, JPEG and DICOM
files into one representation: a float32 ``H x W`` grayscale array in ``[0, 1]`` where bone
is bright. Masks enter through :func:`read_mask` as boolean arrays. Keeping the decoding in one
place means every format quirk (16-bit PNGs, DICOM rescale and windowing, MONOCHROME1
inversion) is handled once, and every broken user file fails the same way: a
:class:`~multimix.core.errors.DataError` that names the file, never a PIL or pydicom traceback and
never a silently wrong array.
"""

from __future__ import annotations

import contextlib
import io
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from multimix.core.atomic import atomic_write
from multimix.core.errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "image_from_array",
    "image_from_dataset",
    "image_from_pil",
    "image_stem",
    "is_image_file",
    "looks_like_image",
    "read_image",
    "read_image_bytes",
    "read_mask",
    "resize_image",
    "resize_mask",
    "write_png",
]

IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".dcm", ".dicom"})
"""Lower-case suffixes of the files the library reads as images."""

_DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"
# Only these PIL plugins may open user files: fewer parsers, fewer surprises.
_PIL_FORMATS = ("PNG", "JPEG")
# PIL modes holding integers wider than 8 bits (or floats): they get a min-max stretch.
_WIDE_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_DEFAULT_MAX_PIXELS = 40_000_000
_MAX_REASON_CHARS = 200


def is_image_file(path: Path) -> bool:
    """Whether ``path`` looks like an image by its suffix; hidden files (``.name``) never do.

    Only the name is inspected, so folder scans stay cheap; hidden files are skipped because
    they are usually OS metadata such as macOS ``._x.png`` resource forks.
    """
    path = Path(path)
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def looks_like_image(path: str | Path) -> bool:
    """:func:`is_image_file`, or a DICOM file recognised by its content whatever its name.

    Scanners and PACS exports often write DICOM without an extension (``IM0001``) or with
    a UID as the name (``1.2.840.113619.2.55.3.123``). A file whose suffix is not an image
    suffix counts when it has the ``DICM`` magic at offset 128, or, for names without a suffix
    or with a numeric one, when pydicom reads it (``force=True``) as a dataset with pixel data.
    Hidden files never count.
    """
    path = Path(path)
    if path.name.startswith("."):
        return False
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    return _dicom_by_content(path)


def image_stem(path: str | Path) -> str:
    """The name an image is matched by (masks, outputs): its stem when it has an image
    suffix, else its whole name (``IM0001``, ``1.2.840.10008.123``)."""
    path = Path(path)
    return path.stem if path.suffix.lower() in IMAGE_SUFFIXES else path.name


def read_image(path: str | Path, max_pixels: int = _DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a PNG, JPEG or DICOM file as a float32 ``H x W`` grayscale array in ``[0, 1]``.

    8-bit images are divided by 255 so their values keep their meaning; wider integer images
    (16-bit PNG, DICOM) have no common scale and are min-max stretched. DICOM goes through the
    modality LUT (rescale slope/intercept) and the VOI LUT (windowing) the file asks for, and
    MONOCHROME1 is inverted so bone is always bright. Images with more than ``max_pixels``
    pixels are refused from the header, before decoding, to guard against decompression bombs.

    Raises:
        DataError: the file is missing, empty, corrupt, too large or of an unsupported type.
    """
    path = Path(path)
    if _is_dicom(path, _check_file(path)):
        return _read_dicom_image(path, max_pixels)
    with _open_pil(path, max_pixels) as img:
        return _pil_to_float(path, img)


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def read_image_bytes(
    data: bytes, name: str = "upload", max_pixels: int = _DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """:func:`read_image` for a file's bytes already in memory (an upload), by content.

    The kind is told from the bytes alone (PNG and JPEG signatures, DICOM's ``DICM`` at offset
    128, else a forced DICOM read that must find pixel data), never from a name, so nothing a
    client sends becomes a path. ``name`` only labels the one-line errors.

    Raises:
        DataError: empty, not a PNG/JPEG/DICOM image, truncated, or too large.
    """
    if not data:
        raise DataError(name, "empty file (0 bytes)")
    source = io.BytesIO(data)
    if data.startswith((_PNG_MAGIC, _JPEG_MAGIC)):
        with _open_pil(Path(name), max_pixels, source) as img:
            return _pil_to_float(Path(name), img)
    magic = data[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC)]
    if magic == _DICOM_MAGIC or _bytes_hold_dicom(data):
        return _read_dicom_image(Path(name), max_pixels, source)
    raise DataError(name, "not a readable image: not a PNG, JPEG or DICOM file")


def _bytes_hold_dicom(data: bytes) -> bool:
    """A DICOM stream without the preamble (old exports): a forced read finds pixel data."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=True, defer_size=256)
            return "PixelData" in ds and int(ds.Rows) > 0 and int(ds.Columns) > 0
    except Exception:  # anything that is not DICOM fails in its own way
        return False


def image_from_dataset(
    ds: Dataset, name: str = "dataset", max_pixels: int = _DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """:func:`read_image` for a pydicom ``Dataset`` already read (a notebook, a PACS query).

    The same checks (pixel data, one frame, size) and display pipeline as a DICOM file.
    """
    if not isinstance(ds, Dataset):
        raise DataError(name, f"not a pydicom Dataset: {type(ds).__name__}")
    pixels, ds = _dataset_pixels(Path(name), ds, False, max_pixels)
    return _dicom_display(Path(name), pixels, ds)


def image_from_pil(
    img: Image.Image, name: str = "image", max_pixels: int = _DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """:func:`read_image` for a PIL image: its EXIF orientation applied, then gray in [0, 1]."""
    width, height = img.size
    if width * height > max_pixels:
        raise _too_large(Path(name), width, height, max_pixels)
    if width == 0 or height == 0:
        raise DataError(name, f"not a readable image: it is {width}x{height} pixels")
    return _pil_to_float(Path(name), _upright(Path(name), img))


def image_from_array(array: np.ndarray, name: str = "array") -> np.ndarray:
    """A numpy image as the library's float32 ``H x W`` gray array in ``[0, 1]``.

    ``(H, W)`` or ``(H, W, 3|4)`` (colour averaged, alpha dropped). uint8 is divided by 255,
    as a PNG is; bool is 0/1; floats must already lie in ``[0, 1]`` (a float array has no
    scale to read it by); other integers (16-bit data) are min-max stretched, as a 16-bit PNG.
    """
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):  # colour: the mean of R, G, B
        rgb = arr[..., :3]
        mean = rgb.astype(np.float64).mean(axis=2)
        if rgb.dtype == np.uint8:
            return (mean / 255.0).astype(np.float32)
        arr = mean if np.issubdtype(rgb.dtype, np.floating) else np.rint(mean).astype(np.int64)
    if arr.ndim != 2 or 0 in arr.shape:
        raise DataError(name, f"an image must be an (H, W) or (H, W, 3) array, not {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise DataError(name, "not a readable image: pixel values include NaN or infinity")
        if arr.min() < 0.0 or arr.max() > 1.0:
            raise DataError(
                name, f"float pixels must lie in [0, 1], got [{arr.min():g}, {arr.max():g}]"
            )
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        return _stretch(Path(name), arr)
    raise DataError(name, f"unsupported pixel type {arr.dtype}")


def read_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a binary segmentation mask as a bool ``H x W`` array.

    Accepted values are ``{0, 255}`` or ``{0, 1}`` (or one of them alone; 16-bit masks may also
    use ``{0, 65535}``). Anything else is an error rather than a threshold, because grey levels
    usually mean a resized or JPEG-compressed mask, or a label map that is not a mask at all.
    ``shape`` is the ``(H, W)`` of the image the mask belongs to; a mismatch is an error, as it
    would silently misalign the segmentation target.

    Raises:
        DataError: the file is unreadable (as in :func:`read_image`), not binary, or of the
            wrong size.
    """
    path = Path(path)
    if _is_dicom(path, _check_file(path)):
        values = _read_dicom_pixels(path, _DEFAULT_MAX_PIXELS)[0]
        if values.ndim != 2:
            raise DataError(path, "mask must be a single-channel DICOM image")
    else:
        with _open_pil(path, _DEFAULT_MAX_PIXELS) as img:
            values = _pil_mask_values(path, img)
    mask = _binarize(path, values)
    if shape is not None and tuple(mask.shape) != tuple(shape):
        height, width = mask.shape
        raise DataError(
            path, f"mask is {width}x{height} but its image is {int(shape[1])}x{int(shape[0])}"
        )
    return mask


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D image to float32 ``(size, size)`` with antialiasing, clipped to ``[0, 1]``.

    Antialiasing matters when shrinking 3000-pixel radiographs to network size: without it thin
    structures alias into noise. Clipping removes the small overshoot of the filter.
    """
    _check_2d(image, "image")
    size = _check_size(size)
    if image.shape == (size, size):
        return np.array(image, dtype=np.float32, copy=True)
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    out = F.interpolate(
        tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return out[0, 0].clamp_(0.0, 1.0).numpy()


def stored_image(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` as the image bank keeps it and the uint8 network entry points take it
    (``models.shift.pooled_features``, ``models.adapt``, ``run_model``): resized
    (:func:`resize_image`) and rounded to uint8 levels."""
    return np.rint(resize_image(image, size) * 255).astype(np.uint8)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D mask to bool ``(size, size)`` by nearest neighbour, so it stays binary."""
    _check_2d(mask, "mask")
    size = _check_size(size)
    if mask.shape == (size, size):
        return np.array(mask, dtype=bool, copy=True)
    tensor = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    out = F.interpolate(tensor, size=(size, size), mode="nearest-exact")
    return (out[0, 0] > 0.5).numpy()


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write a 2-D array as an 8-bit grayscale PNG, atomically.

    bool becomes 0/255, float in ``[0, 1]`` becomes ``round(x * 255)`` and uint8 is written as
    is. The PNG is written to a temporary file in the same folder and moved into place with
    :func:`os.replace`, so an interrupted run never leaves a half-written image behind.

    Raises:
        ValueError: the array is not 2-D, or has an unsupported dtype or values.
        DataError: the file cannot be written.
    """
    path = Path(path)
    pixels = _to_uint8(array)
    try:
        atomic_write(path, lambda fh: Image.fromarray(pixels).save(fh, format="PNG"))
    except OSError as exc:
        raise DataError(path, f"cannot write PNG: {_reason(exc)}") from exc


# --------------------------------------------------------------------------- file checks


def _check_file(path: Path) -> bytes:
    """Fail early with a precise message for missing, non-regular or empty files.

    Returns the first bytes of the file, enough to sniff the DICOM magic.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except OSError as exc:
        raise DataError(path, f"cannot access file: {_reason(exc)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise DataError(path, "is a folder, not an image file")
    if info.st_size == 0:
        raise DataError(path, "empty file (0 bytes)")
    try:
        with path.open("rb") as fh:
            return fh.read(_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC))
    except OSError as exc:
        raise DataError(path, f"cannot read file: {_reason(exc)}") from None


def _is_dicom(path: Path, head: bytes) -> bool:
    """DICOM by suffix, magic bytes or content; raise for a file we cannot read at all."""
    suffix = path.suffix.lower()
    if suffix in _DICOM_SUFFIXES:
        return True
    if head[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC)] == _DICOM_MAGIC:
        return True
    if suffix not in IMAGE_SUFFIXES and _may_be_bare_dicom(path) and _forced_dicom(path):
        return True
    if suffix not in IMAGE_SUFFIXES:
        expected = ", ".join(sorted(IMAGE_SUFFIXES))
        raise DataError(path, f"unsupported file type {suffix or '(no suffix)'!r} ({expected})")
    return False


def _dicom_by_content(path: Path) -> bool:
    """DICM magic at offset 128, or (bare names only) a forced pydicom read with pixel data."""
    try:
        if not path.is_file():
            return False
        with path.open("rb") as fh:
            head = fh.read(_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC))
    except OSError:
        return False
    if head[_DICOM_MAGIC_OFFSET:] == _DICOM_MAGIC:
        return True
    return _may_be_bare_dicom(path) and len(head) >= 8 and _forced_dicom(path)


def _may_be_bare_dicom(path: Path) -> bool:
    """Names that old DICOM exports use: no suffix, or a numeric one (UID-style names)."""
    suffix = path.suffix
    return suffix == "" or suffix[1:].isdigit()


def _forced_dicom(path: Path) -> bool:
    """Whether pydicom, forced, finds an image (pixel data, rows, columns) in ``path``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True, defer_size=256)
            return "PixelData" in ds and int(ds.Rows) > 0 and int(ds.Columns) > 0
    except Exception:  # anything that is not DICOM fails in its own way
        return False


def _reason(exc: BaseException) -> str:
    """One-line, bounded description of a library exception for a DataError message."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    if len(text) > _MAX_REASON_CHARS:
        text = text[: _MAX_REASON_CHARS - 3] + "..."
    return text


def _too_large(path: Path, width: int, height: int, max_pixels: int) -> DataError:
    return DataError(
        path,
        f"image is {width}x{height} = {width * height:,} pixels, more than the limit of "
        f"{max_pixels:,}; refusing to decode it (possible decompression bomb)",
    )


def _stretch(path: Path, values: np.ndarray) -> np.ndarray:
    """Min-max stretch to float32 ``[0, 1]``; a constant image becomes zeros."""
    data = np.asarray(values, dtype=np.float64)
    if not np.isfinite(data).all():
        raise DataError(path, "not a readable image: pixel values include NaN or infinity")
    low, high = float(data.min()), float(data.max())
    if high <= low:
        return np.zeros(data.shape, dtype=np.float32)
    out = (data - low) / (high - low)
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32)


# --------------------------------------------------------------------------- PNG / JPEG


@contextlib.contextmanager
def _open_pil(
    path: Path, max_pixels: int, source: io.BytesIO | None = None
) -> Iterator[Image.Image]:
    """Open and fully decode a PNG/JPEG, checking its size from the header first.

    ``img.load()`` runs here so truncated files fail with a DataError instead of later, and
    PIL's own decompression-bomb warning is silenced because ``max_pixels`` replaces it.
    ``source``: bytes already in memory (an upload), named ``path`` in messages only.
    """
    if source is not None:
        fh = contextlib.nullcontext(source)
    else:
        try:
            fh = path.open("rb")
        except OSError as exc:
            raise DataError(path, f"cannot read file: {_reason(exc)}") from None
    with fh as fh:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(fh, formats=_PIL_FORMATS)
        except Image.DecompressionBombError as exc:
            raise DataError(
                path, f"image is too large to decode safely (possible decompression bomb): {exc}"
            ) from None
        except UnidentifiedImageError:
            raise DataError(path, "not a readable image: not a valid PNG or JPEG file") from None
        except Exception as exc:  # PIL raises many types (SyntaxError, struct.error, ...)
            raise DataError(path, f"not a readable image: {_reason(exc)}") from None
        with img:
            width, height = img.size
            if width * height > max_pixels:
                raise _too_large(path, width, height, max_pixels)
            if width == 0 or height == 0:
                raise DataError(path, f"not a readable image: it is {width}x{height} pixels")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    img.load()
            except Image.DecompressionBombError as exc:
                raise DataError(
                    path,
                    f"image is too large to decode safely (possible decompression bomb): {exc}",
                ) from None
            except Exception as exc:
                raise DataError(path, f"not a readable image: {_reason(exc)}") from None
            yield _upright(path, img)


def _upright(path: Path, img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (phones and some viewers save JPEGs rotated with a tag), so
    an image and its mask come out the way a viewer shows them."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a damaged EXIF block: the pixels are still good
        return img
    if orientation in (None, 1):
        return img
    try:
        return ImageOps.exif_transpose(img)
    except Exception as exc:
        raise DataError(path, f"cannot apply its EXIF orientation: {_reason(exc)}") from None


def _pil_to_float(path: Path, img: Image.Image) -> np.ndarray:
    """8-bit images keep their scale (/255); wider ones are min-max stretched."""
    if img.mode in _WIDE_MODES:
        return _stretch(path, np.asarray(img))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # avoids PIL's warning for palette transparency
    if img.mode != "L":
        img = img.convert("L")
    return np.asarray(img, dtype=np.float32) / np.float32(255.0)


def _pil_mask_values(path: Path, img: Image.Image) -> np.ndarray:
    """Raw mask values: single channel as is; colour only when its channels are equal."""
    if img.mode == "1" or img.mode in _WIDE_MODES or img.mode == "L":
        return np.asarray(img)
    if img.mode == "LA":
        return np.asarray(img.getchannel("L"))
    rgb = np.asarray(img.convert("RGB"))
    if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
        raise DataError(path, "mask is a colour image whose R, G and B channels differ")
    return rgb[..., 0]


def _binarize(path: Path, values: np.ndarray) -> np.ndarray:
    """Accept only {0, 255} / {0, 1} style masks (or {0, 65535} for 16-bit)."""
    if values.dtype == bool:
        return values.copy()
    found = np.unique(values)
    allowed = [{0.0, 255.0}, {0.0, 1.0}]
    if np.issubdtype(values.dtype, np.integer) and values.dtype.itemsize >= 2:
        allowed.append({0.0, 65535.0})
    found_set = {float(v) for v in found}
    if not any(found_set <= group for group in allowed):
        shown = ", ".join(_format_value(v) for v in found[:5])
        more = f", ... ({len(found)} distinct values)" if len(found) > 5 else ""
        hint = (
            "; JPEG compression blurs masks, save them as PNG"
            if path.suffix.lower() in {".jpg", ".jpeg"}
            else ""
        )
        raise DataError(path, f"mask is not binary: found values {shown}{more}{hint}")
    return values > 0


def _format_value(value: np.generic) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() else f"{number:g}"


# --------------------------------------------------------------------------- DICOM


def _read_dicom_pixels(
    path: Path, max_pixels: int, source: io.BytesIO | None = None
) -> tuple[np.ndarray, Dataset]:
    """Parse a DICOM file and decode its single frame; returns ``(pixels, dataset)``.

    The header is checked (pixel data present, one frame, size within ``max_pixels``) before
    anything is decoded. Files without the DICM preamble are retried with ``force=True`` since
    old exports omit it, but then must at least carry pixel data to count as DICOM.
    ``source``: bytes already in memory (an upload), named ``path`` in messages only.
    """
    forced = False
    where = source if source is not None else path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            try:
                ds = pydicom.dcmread(where)
            except InvalidDicomError:
                forced = True
                if source is not None:
                    source.seek(0)
                ds = pydicom.dcmread(where, force=True)
        except Exception as exc:
            raise DataError(path, f"not a readable image: invalid DICOM ({_reason(exc)})") from None
    return _dataset_pixels(path, ds, forced, max_pixels)


def _dataset_pixels(
    path: Path, ds: Dataset, forced: bool, max_pixels: int
) -> tuple[np.ndarray, Dataset]:
    """The single frame of a parsed dataset, its header checked before decoding."""
    pixel_keys = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    if not any(key in ds for key in pixel_keys):
        if forced:
            raise DataError(path, "not a readable image: not a valid DICOM file")
        raise DataError(path, "DICOM file has no pixel data (missing, or the file is truncated)")
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception:
        raise DataError(
            path, "not a readable image: DICOM header lacks valid Rows/Columns"
        ) from None
    if rows <= 0 or columns <= 0:
        raise DataError(path, f"not a readable image: DICOM image is {columns}x{rows} pixels")
    if rows * columns > max_pixels:
        raise _too_large(path, columns, rows, max_pixels)
    if frames > 1:
        raise DataError(
            path, f"multi-frame DICOM ({frames} frames) is not supported; export a single frame"
        )

    file_meta = getattr(ds, "file_meta", None)
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if syntax is None:
        syntax = _assume_transfer_syntax(ds)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = np.asarray(ds.pixel_array)
    except Exception as exc:
        if syntax is not None and syntax.is_compressed:
            try:
                available = get_decoder(syntax).is_available
            except Exception:
                available = False
            if not available:
                raise DataError(
                    path,
                    f"cannot decode compressed DICOM pixel data ({syntax.name}): no decoder "
                    "installed; pylibjpeg (with pylibjpeg-libjpeg / pylibjpeg-openjpeg) "
                    "would be needed",
                ) from None
            raise DataError(
                path,
                f"not a readable image: cannot decode {syntax.name} pixel data "
                f"({_reason(exc)}); pylibjpeg may be needed for this transfer syntax",
            ) from None
        raise DataError(
            path, f"not a readable image: cannot decode pixel data ({_reason(exc)})"
        ) from None
    if pixels.ndim == 3 and int(ds.get("SamplesPerPixel", 1) or 1) == 1:
        raise DataError(path, "multi-frame DICOM is not supported; export a single frame")
    if pixels.ndim not in (2, 3) or pixels.shape[:2] != (rows, columns):
        raise DataError(path, f"not a readable image: unexpected pixel shape {pixels.shape}")
    return pixels, ds


def _assume_transfer_syntax(ds: Dataset) -> UID:
    """Older exports have no file meta: use the encoding pydicom found while parsing the
    dataset, or the DICOM default, implicit VR little endian."""
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None or implicit:
        syntax = ImplicitVRLittleEndian
    else:
        syntax = ExplicitVRLittleEndian if little or little is None else ExplicitVRBigEndian
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    return syntax


def _read_dicom_image(path: Path, max_pixels: int, source: io.BytesIO | None = None) -> np.ndarray:
    """Apply the DICOM display pipeline: modality LUT, VOI LUT, stretch, MONOCHROME1 inversion."""
    pixels, ds = _read_dicom_pixels(path, max_pixels, source)
    return _dicom_display(path, pixels, ds)


def _dicom_display(path: Path, pixels: np.ndarray, ds: Dataset) -> np.ndarray:
    """Decoded pixels of ``ds`` as the float image a viewer shows (bone bright)."""
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if pixels.ndim == 2 and photometric == "PALETTE COLOR":
                pixels = apply_color_lut(pixels, ds)
            if pixels.ndim == 3:
                values = pixels.astype(np.float64).mean(axis=-1)
            else:
                values = apply_modality_lut(pixels, ds)
                values = apply_voi_lut(values, ds)
    except Exception as exc:
        raise DataError(path, f"not a readable image: invalid DICOM LUT ({_reason(exc)})") from None
    image = _stretch(path, values)
    if photometric == "MONOCHROME1":
        image = np.float32(1.0) - image
    return image


# --------------------------------------------------------------------------- helpers


def _check_2d(array: np.ndarray, what: str) -> None:
    if not isinstance(array, np.ndarray) or array.ndim != 2:
        shape = getattr(array, "shape", None)
        raise ValueError(f"{what} must be a 2-D numpy array, got shape {shape}")


def _check_size(size: int) -> int:
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    return int(size)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Convert bool / uint8 / float-in-[0,1] 2-D arrays (or uint8 RGB) to uint8 for PNG."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.ndim != 2:
        raise ValueError(f"write_png needs a 2-D or RGB uint8 array, got shape {array.shape}")
    if array.dtype == bool:
        return array.astype(np.uint8) * np.uint8(255)
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if np.issubdtype(array.dtype, np.floating):
        if array.size and not np.isfinite(array).all():
            raise ValueError("write_png: array contains NaN or infinity")
        if array.size and (array.min() < -1e-6 or array.max() > 1 + 1e-6):
            raise ValueError(
                f"write_png: float values must lie in [0, 1], got [{array.min()}, {array.max()}]"
            )
        return np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"write_png: unsupported dtype {array.dtype} (use bool, uint8 or float)")
