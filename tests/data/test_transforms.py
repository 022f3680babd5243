"""Resizing (medclf.data.transforms.fit_image) without albumentations: OpenCV's bilinear
resize gives the same bytes as albumentations' ``Resize``, which the decoded cache and the
uncached path used before, for every stored dtype and channel count."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from medclf.data.transforms import fit_image


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [None, 1, 2, 3, 4, 5, 6, 9])
@pytest.mark.parametrize("size", [(24, 40), (97, 61)])  # down and up from 50 x 70
def test_the_resize_is_albumentations_resize(dtype, channels, size) -> None:
    rng = np.random.default_rng(0)
    shape = (50, 70) if channels is None else (50, 70, channels)
    high = 1.0 if dtype == np.float32 else np.iinfo(dtype).max
    image = (rng.random(shape) * high).astype(dtype)
    expected = A.Resize(*size)(image=image)["image"]
    got = fit_image(image, *size)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert got.tobytes() == expected.tobytes()


def test_an_image_of_the_size_is_returned_as_it_is() -> None:
    image = np.zeros((8, 8, 1), np.uint8)
    assert fit_image(image, 8, 8) is image
