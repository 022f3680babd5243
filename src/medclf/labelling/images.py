"""Images for the labelling page, read through medclf's own reader (medclf.data.io), so
the page shows every format training reads: PNG/JPEG/TIFF (16-bit too), DICOM through its
window, NIfTI and other volumes one slice at a time.

What is shown: the image as ``read_image`` scales it to [0, 1] (DICOM: through its window),
except that a dark image, whose 99.5th percentile is below a quarter of the range (10- to
14-bit data in a 16-bit file, a dim fluorescence channel), is stretched between its 0.5th
and 99.5th percentiles; DICOM is never stretched (its window is the choice). Channels: 1 is
grey, 3 is RGB, 2 is red and green, more than 3 shows the first three. A volume shows slice
``z`` (default the middle one). Decoded files are kept in a small cache keyed by path, size
and modification time, so moving through a volume's slices reads the file once.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from medclf.data.io import image_suffix, read_image
from medclf.errors import DataError


class ImageReader:
    """Decoded images (an LRU cache of ``size`` files) and their PNG renderings."""

    def __init__(self, dicom_window: Any = None, size: int = 16) -> None:
        self.dicom_window = dicom_window
        self.size = size
        self._cache: OrderedDict[tuple, np.ndarray | DataError] = OrderedDict()
        self._lock = threading.Lock()

    def array(self, path: Path) -> np.ndarray:
        """The image as read_image gives it; an unreadable file raises its DataError (also
        remembered, so a broken file is not decoded again until it changes)."""
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
        if found is None:
            try:
                found = read_image(path, dicom_window=self.dicom_window)
            except DataError as exc:
                found = exc
            with self._lock:
                self._cache[key] = found
                while len(self._cache) > self.size:
                    self._cache.popitem(last=False)
        if isinstance(found, DataError):
            raise found
        return found

    def info(self, path: Path) -> dict[str, Any]:
        """Shape, slice count and channels of an image, or the reason it cannot be read."""
        try:
            array = self.array(path)
        except DataError as exc:
            return {"error": str(exc)}
        except OSError as exc:
            return {"error": f"{path}: {exc.strerror or exc}"}
        depth = array.shape[0] if array.ndim == 4 else 1
        return {
            "error": None,
            "shape": list(array.shape[:-1]),
            "channels": int(array.shape[-1]),
            "depth": int(depth),
        }

    def png(self, path: Path, z: int | None = None, size: int | None = None) -> bytes:
        """The image (slice ``z`` of a volume), at most ``size`` pixels on its long side, as
        an 8-bit PNG."""
        from PIL import Image

        array = self.array(path)
        if array.ndim == 4:
            depth = array.shape[0]
            array = array[depth // 2 if z is None else min(max(int(z), 0), depth - 1)]
        dicom = image_suffix(path) in (".dcm", ".dicom")
        picture = Image.fromarray(display_pixels(array, stretch=not dicom))
        if size:
            picture.thumbnail((int(size), int(size)))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()


def display_pixels(image: np.ndarray, stretch: bool = True) -> np.ndarray:
    """An (H, W, C) image in [0, 1] as 8-bit grey (H, W) or RGB (H, W, 3), see the module."""
    low, high = np.percentile(image, [0.5, 99.5])
    if stretch and high < 0.25 and high > low:
        image = np.clip((image - low) / (high - low), 0.0, 1.0)
    channels = image.shape[-1]
    if channels == 1:
        image = image[..., 0]
    elif channels == 2:
        image = np.concatenate([image, np.zeros_like(image[..., :1])], axis=-1)
    elif channels > 3:
        image = image[..., :3]
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
