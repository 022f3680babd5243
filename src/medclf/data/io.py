"""Read one image file into a float32 array scaled to [0, 1]: (H, W, C) or (D, H, W, C)
(:func:`read_image`), or into the form the decoded cache stores (:func:`read_raw`: uint8 for
8-bit sources, uint16 for 16-bit ones, else float32 in [0, 1]; :func:`unit_float` scales it).

C is the real channel count (1 grey, 3 RGB, N for multichannel microscopy); D is the slice
axis of a volume. Per format:

- PNG, JPEG, BMP (Pillow): grey → C=1, colour → C=3, alpha dropped.
- TIFF (tifffile): the first series, laid out by its axes (``series[0].axes``). ``C``/``S``
  axes are channels and all are kept (a 4th channel is data in microscopy, never dropped as
  alpha); one other axis (``Z``, ``I``, ``Q``, ``T``) of length > 1 is the volume depth.
- DICOM: RescaleSlope/Intercept (modality LUT), then a window, MONOCHROME1 inverted;
  multi-frame → volume; colour (RGB, YBR, palette) → C=3 scaled by bit depth, never windowed.
- NIfTI: voxel order (X, Y, Z[, T|C]) is returned as (Z, Y, X[, C]) without reorienting by
  the affine; a single slice is a 2D image. Min-max scaled over the whole file.
- NPY: see :func:`_read_npy` for the shape and scaling rules.

Integers are scaled by their dtype (8-bit /255, 16-bit /65535: scaled, never clipped) so a
microscopy file keeps its dynamic range. Float data (NIfTI, NPY outside [0, 1]) has no natural
range, so it is min-max scaled per file over all voxels and channels (a constant file → zeros,
NaN → 0). Volumes are never resampled: spacing and orientation metadata are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medclf.errors import DataError

_TIFF = (".tif", ".tiff")
_DICOM = (".dcm", ".dicom")
_NIFTI = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", *_TIFF, *_DICOM, *_NIFTI, ".npy")
_PIXEL_DATA = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

DicomWindow = str | Sequence[float] | None


def image_suffix(path: str | Path) -> str:
    """Lower-case suffix, with ``.nii.gz`` kept whole (``Path.suffix`` would give ``.gz``)."""
    name = os.path.basename(path).lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    suffix = os.path.splitext(name)[1]
    return suffix if suffix != "." else ""


def is_image_file(path: Path | os.DirEntry) -> bool:
    """True for files whose suffix is a supported image format (case-insensitive); a
    directory entry answers ``is_file`` without a ``stat`` for most files."""
    return image_suffix(path) in IMAGE_SUFFIXES and path.is_file()


def image_files(folder: str | Path) -> list[str]:
    """Every image file under ``folder`` (recursively; symlinked folders are not entered,
    as ``Path.rglob``) as path strings, in ``Path`` order. Strings, not Path objects: for
    100k files building Paths costs seconds."""
    found: list[str] = []
    folders = [os.fspath(folder)]
    while folders:
        with os.scandir(folders.pop()) as listing:
            for entry in listing:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                elif is_image_file(entry):
                    found.append(entry.path)
    return sorted(found, key=lambda path: path.split(os.sep))


def spatial_dims(array: np.ndarray) -> int:
    """2 for an image (H, W, C), 3 for a volume (D, H, W, C)."""
    if array.ndim not in (3, 4):
        raise DataError(
            f"expected an image (H, W, C) or a volume (D, H, W, C), got shape {array.shape}; "
            "load it with read_image."
        )
    return array.ndim - 1


def to_unit_float(array: np.ndarray) -> np.ndarray:
    """Scale an integer or float array to float32 in [0, 1] by its dtype's range.

    uint8 → /255, uint16 → /65535 (either byte order). Other integers holding non-negative
    values are read as 8-bit (max ≤ 255) or 16-bit (max ≤ 65535) data, else divided by their
    maximum; signed integers with negative values are shifted by their dtype's range (int16
    -32768..32767 → 0..1). Floats in [0, 1] are kept, above 1 divided by their maximum, and
    with negative values min-max scaled.
    """
    kind, size = array.dtype.kind, array.dtype.itemsize
    if kind == "b":
        return array.astype(np.float32)
    if kind == "u" and size in (1, 2):
        return array.astype(np.float32) / (255.0 if size == 1 else 65535.0)
    if kind in "iu":
        low = int(array.min(initial=0))
        if low < 0:
            info = np.iinfo(array.dtype)
            return ((array.astype(np.float64) - info.min) / (info.max - info.min)).astype(
                np.float32
            )
        high = int(array.max(initial=0))
        top = 255.0 if high <= 255 else 65535.0 if high <= 65535 else float(high)
        return (array.astype(np.float64) / top).astype(np.float32)
    array = array.astype(np.float32)
    if not array.size:
        return array
    low, top = float(np.nanmin(array)), float(np.nanmax(array))
    if low < 0.0:
        return (array - low) / (top - low) if top > low else np.zeros_like(array)
    return array / top if top > 1.0 else array


def storage_form(array: np.ndarray) -> np.ndarray:
    """The decoded pixels with their depth kept: 8-bit data (uint8, bools, integers within
    0..255) as uint8, 16-bit data as uint16, anything else as :func:`to_unit_float` makes it
    (float32 in [0, 1]). ``unit_float(storage_form(a))`` equals ``to_unit_float(a)``."""
    kind, size = array.dtype.kind, array.dtype.itemsize
    if kind == "b":
        return array.astype(np.uint8) * np.uint8(255)
    if kind == "u" and size in (1, 2):
        return array.astype(np.uint8 if size == 1 else np.uint16, copy=False)
    if kind in "iu" and array.size:
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high <= 65535:
            return array.astype(np.uint8 if high <= 255 else np.uint16)
    return to_unit_float(array)


def unit_float(array: np.ndarray) -> np.ndarray:
    """A stored image (:func:`storage_form`) as float32 in [0, 1]: uint8 /255, uint16 /65535;
    float data is returned as float32."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255.0)
    if array.dtype == np.uint16:
        return array.astype(np.float32) / np.float32(65535.0)
    return array.astype(np.float32, copy=False)


def _window(array: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] linearly onto [0, 1], clipping outside it; NaN → 0, empty range → 0."""
    if not high > low:
        return np.zeros(array.shape, np.float32)
    scaled = np.clip((array - low) / (high - low), 0.0, 1.0)
    return np.nan_to_num(scaled, nan=0.0).astype(np.float32, copy=False)


def _minmax(array: np.ndarray) -> np.ndarray:
    """Min-max scale over the finite values (float data has no natural range)."""
    finite = np.isfinite(array)
    values = array if finite.all() else array[finite]
    if not values.size:
        return np.zeros(array.shape, np.float32)
    return _window(array, float(values.min()), float(values.max()))


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        if img.mode in ("1", "L", "I;16", "I;16B", "I;16L", "I", "F"):
            array = np.asarray(img)
        elif img.mode == "LA":
            array = np.asarray(img.convert("L"))
        else:
            array = np.asarray(img.convert("RGB"))
    return storage_form(array[:, :, None] if array.ndim == 2 else array)


def _read_tiff(path: Path) -> np.ndarray:
    """First series of a TIFF, arranged by its axes into (H, W, C) or (D, H, W, C).

    Axes ``C`` and ``S`` are channels (merged if both occur); ``Y``, ``X`` are the image; any
    one other axis of length > 1 (``Z``, ``I``, ``Q``, ``T``...) is the depth of a volume.
    tifffile drops length-1 axes, so a one-plane stack is a 2D image.
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes, array = series.axes.upper(), series.asarray()
    if len(axes) != array.ndim or "Y" not in axes or "X" not in axes:
        raise DataError(f"{path}: TIFF with axes {axes!r} and shape {array.shape} has no Y, X.")
    channels = [i for i, axis in enumerate(axes) if axis in "CS"]
    planes = [i for i, axis in enumerate(axes) if axis not in "CSYX"]
    if len(planes) > 1:
        raise DataError(
            f"{path}: TIFF axes {axes!r} (shape {array.shape}) hold more than one stack axis; "
            "only a single Z-stack (or time series) is supported. Save one stack per file."
        )
    array = array.transpose([*planes, axes.index("Y"), axes.index("X"), *channels])
    depth_hw = array.shape[: len(planes) + 2]
    return storage_form(array.reshape(*depth_hw, -1))


def _first(value: object) -> float:
    """A DICOM value that may be multi-valued (several windows) → its first number."""
    return float(value[0] if isinstance(value, Sequence) and not isinstance(value, str) else value)


def _functional_item(ds, sequence: str, frame: int):
    """The item of ``sequence`` for ``frame`` in enhanced multi-frame DICOM (per-frame, shared)."""
    for groups, index in (
        ("PerFrameFunctionalGroupsSequence", frame),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        items = ds.get(groups) or []
        if index < len(items) and items[index].get(sequence):
            return items[index].get(sequence)[0]
    return None


def _dicom_rescale(ds, frames: np.ndarray) -> np.ndarray:
    """Stored values → modality values (e.g. Hounsfield units) via slope/intercept or LUT.

    Enhanced multi-frame files keep slope and intercept per frame in functional groups.
    """
    from pydicom.pixels import apply_rescale

    top_level = "RescaleSlope" in ds or "ModalityLUTSequence" in ds
    out = np.empty(frames.shape, np.float64)
    for i, frame in enumerate(frames):
        source = ds if top_level else _functional_item(ds, "PixelValueTransformationSequence", i)
        out[i] = apply_rescale(frame, source if source is not None else ds)
    return out


def _dicom_range(path: Path, ds, values: np.ndarray, window: DicomWindow) -> tuple[float, float]:
    """The [low, high] of modality values that map onto [0, 1]."""
    if window is None or (isinstance(window, str) and window.lower() == "auto"):
        source = ds if "WindowCenter" in ds else _functional_item(ds, "FrameVOILUTSequence", 0)
        if source is not None and "WindowCenter" in source and "WindowWidth" in source:
            center, width = _first(source.WindowCenter), _first(source.WindowWidth)
            if width > 0:
                return center - width / 2, center + width / 2
        finite = values[np.isfinite(values)]
        return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    try:
        center, width = (float(v) for v in window)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        center, width = 0.0, -1.0
    if isinstance(window, str) or not width > 0:
        raise DataError(
            f"{path}: dicom_window={window!r} must be 'auto' or [center, width] with width > 0, "
            "e.g. [40, 400] for a CT soft-tissue window."
        )
    return center - width / 2, center + width / 2


def _read_dicom(path: Path, window: DicomWindow) -> np.ndarray:
    """DICOM pixels → modality values → window → [0, 1]; multi-frame → (D, H, W, C)."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import UncompressedTransferSyntaxes

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        ds = pydicom.dcmread(path, force=True)  # old files without the 'DICM' header
    if not any(name in ds for name in _PIXEL_DATA):
        raise DataError(
            f"{path}: this DICOM has no pixel data (a report, DICOMDIR or not a DICOM at all); "
            "remove it from the image folder or list."
        )
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        hint = (
            "Compressed DICOM needs a decoder: pip install pylibjpeg pylibjpeg-libjpeg "
            "pylibjpeg-openjpeg (or python-gdcm), or decompress it with `gdcmconv --raw`."
            if syntax is not None and syntax not in UncompressedTransferSyntaxes
            else "The file is truncated or its image tags are invalid; re-export or remove it."
        )
        raise DataError(
            f"{path}: cannot decode the DICOM pixel data (transfer syntax {syntax}: {exc}). {hint}"
        ) from None
    volume = int(ds.get("NumberOfFrames") or 1) > 1
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, ds)  # palette indices → RGB
    if pixels.ndim == (4 if volume else 3):  # colour (RGB, YBR converted to RGB, palette)
        return storage_form(pixels)
    values = _dicom_rescale(ds, pixels if volume else pixels[None])
    image = _window(values, *_dicom_range(path, ds, values, window))
    if photometric == "MONOCHROME1":
        image = 1.0 - image  # MONOCHROME1: the lowest value is white
    return image[..., None] if volume else image[0, ..., None]


def _read_nifti(path: Path) -> np.ndarray:
    """NIfTI (X, Y, Z[, T|C]) → (Z, Y, X, C), or (Y, X, C) for one slice; min-max scaled."""
    import nibabel as nib

    data = np.asarray(nib.load(path).get_fdata(dtype=np.float32))  # applies scl_slope/inter
    extra = [n for n in data.shape[3:] if n > 1]
    if data.ndim > 4 and len(extra) <= 1:  # e.g. vector images (X, Y, Z, 1, C)
        data = data.reshape(*data.shape[:3], *extra)
    if data.ndim > 4 or data.ndim < 2:
        raise DataError(
            f"{path}: NIfTI of shape {data.shape} is not a 2D, 3D or 4D image; save one volume "
            "(X, Y, Z) or one volume with channels (X, Y, Z, C) per file."
        )
    if data.ndim == 4 and data.shape[3] > 4:
        raise DataError(
            f"{path}: NIfTI of shape {data.shape} is 4D ({data.shape[3]} volumes, e.g. a time "
            "series), but one 3D volume per file is expected (or X, Y, Z with at most 4 "
            "channels). Split it into one file per volume, or pick the volume to train on."
        )
    data = data.reshape(data.shape + (1,) * (4 - data.ndim))
    volume = data.transpose(2, 1, 0, 3)
    return _minmax(volume[0] if volume.shape[0] == 1 else volume)


def _read_npy(path: Path) -> np.ndarray:
    """A NumPy array, never unpickled.

    Shapes: (H, W) → (H, W, 1); 3-D with a last axis ≤ 4 is (H, W, C), else a volume
    (D, H, W) → (D, H, W, 1); 4-D must be (D, H, W, C) with C ≤ 4. So a (D, H, W) volume
    only 4 voxels wide, or a channels-first (C, H, W) image, is misread: save channels last.
    Scaling: integers and bools by dtype (:func:`to_unit_float`); floats already in [0, 1]
    are kept, any other float data is min-max scaled.
    """
    with open(path, "rb") as file:
        magic = file.read(6)
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):  # .npy, or an .npz zip
        raise DataError(
            f"{path}: not a NumPy .npy file (corrupt, truncated or another format); "
            "write it with np.save, or replace or remove it."
        )
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise
        raise DataError(
            f"{path}: holds Python objects (a pickled array), which are never loaded because "
            "unpickling can run arbitrary code. Save a numeric array instead, e.g. "
            "np.save(path, array.astype(np.float32))."
        ) from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        found = array.dtype if isinstance(array, np.ndarray) else "an .npz archive"
        raise DataError(f"{path}: expected one numeric array, found {found}; save it with np.save.")
    if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] > 4):
        array = array[..., None]
    if array.ndim not in (3, 4) or array.shape[-1] > 4:
        raise DataError(
            f"{path}: array of shape {array.shape} is not (H, W[, C]) or (D, H, W[, C]) with "
            "C ≤ 4 channels last; save it channels-last, e.g. np.moveaxis(array, 0, -1)."
        )
    if array.dtype.kind in "biu":
        return storage_form(array)
    finite = array[np.isfinite(array)]
    if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
        return np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return _minmax(array)


def read_raw(path: str | Path, dicom_window: DicomWindow = None) -> np.ndarray:
    """Decode an image file to (H, W, C) or (D, H, W, C) with its depth kept: uint8 for 8-bit
    sources, uint16 for 16-bit ones, float32 in [0, 1] for the rest (DICOM after its window,
    NIfTI, float data); :func:`unit_float` gives what :func:`read_image` does.

    ``dicom_window`` applies to monochrome DICOM only: None or ``"auto"`` uses the file's
    WindowCenter/WindowWidth (else the image's min-max), ``[center, width]`` clips to
    [center - width/2, center + width/2]. A bad file raises DataError naming it.
    """
    path = Path(path)
    suffix = image_suffix(path)
    try:
        if suffix in _DICOM:
            array = _read_dicom(path, dicom_window)
        elif suffix in _NIFTI:
            array = _read_nifti(path)
        elif suffix == ".npy":
            array = _read_npy(path)
        elif suffix in _TIFF:
            array = _read_tiff(path)
        else:
            array = _read_pil(path)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found.") from None
    except Exception as exc:
        raise DataError(
            f"{path}: cannot read this image ({type(exc).__name__}: {exc}). The file is "
            "corrupt, truncated or not an image; replace or remove it."
        ) from None
    if 0 in array.shape:
        raise DataError(
            f"{path}: the image has no pixels (shape {array.shape}: a width, height or depth "
            "of 0); replace or remove the file."
        )
    if array.ndim not in (3, 4):
        raise DataError(
            f"{path}: expected a 2D image or a 3D volume, got an array of shape {array.shape}; "
            "replace or remove the file."
        )
    return np.ascontiguousarray(array)


def read_image(path: str | Path, dicom_window: DicomWindow = None) -> np.ndarray:
    """Decode an image file to float32 (H, W, C) or (D, H, W, C) in [0, 1]
    (:func:`read_raw`, scaled by :func:`unit_float`)."""
    return np.ascontiguousarray(unit_float(read_raw(path, dicom_window)))


def convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Convert the last (channel) axis to ``channels``: grey → N by repetition (any dtype),
    RGB → grey by luminance (ITU-R 601; float32 in [0, 1]). Works for images (H, W, C) and
    volumes (D, H, W, C)."""
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 1:
        return np.repeat(image, channels, axis=-1)
    if channels == 1 and have == 3:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return (unit_float(image) @ weights)[..., None].astype(np.float32)
    raise DataError(
        f"cannot convert an image with {have} channels to {channels} channels: found "
        f"{have}-channel images but datamodule.channels={channels}. Set datamodule.channels="
        f"{have} (or 'auto') if every image has {have} channels, or convert the files."
    )
