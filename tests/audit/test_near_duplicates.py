"""Near-duplicates: pHash as imagehash computes it, an exhaustive pair search, feature
confirmation, severities, and every injected copy of the generated set found, no other pair."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from audit_synthetic import (
    gradient_features,
    single_blas_thread,
    structured_images,
    write_duplicate_set,
)

from medclf.audit.duplicates import (
    MAX_HAMMING,
    check_near_duplicates,
    near_duplicates,
    severity,
)
from medclf.audit.hashing import hamming_pairs, view_hashes
from medclf.audit.images import grey_uint8, scan_images
from medclf.errors import ConfigError, DataError

one_blas_thread = pytest.fixture(autouse=True, scope="module")(single_blas_thread)


@pytest.fixture(scope="module")
def duplicate_set(tmp_path_factory):
    """500 distinct generated images in train, 160 copies of them in val and test."""
    return write_duplicate_set(tmp_path_factory.mktemp("duplicates"))


@pytest.fixture(scope="module")
def duplicate_scan(duplicate_set):
    return scan_images(duplicate_set.frame["path"])


def test_the_full_view_hash_is_imagehash_phash() -> None:
    import imagehash
    from PIL import Image

    images = structured_images(30, seed=5, low=20, high=250)
    images.append(np.full((40, 70), 90, np.uint8))  # flat
    for image in images:
        expected = int(str(imagehash.phash(Image.fromarray(image))), 16)
        assert int(view_hashes(image, crop_views=False)[0]) == expected
        assert int(view_hashes(image)[0]) == expected


def test_the_crop_views_are_pillows_crops_within_2_bits() -> None:
    """The crop views' matrix-product shrink against Pillow's resize of each crop box."""
    from PIL import Image

    from medclf.audit.hashing import phash_bits

    for image in structured_images(20, seed=6):
        pil = Image.fromarray(image)
        cw, ch = round(pil.width * 0.95), round(pil.height * 0.95)
        boxes = [
            (left, top, left + cw, top + ch)
            for top in np.linspace(0, pil.height - ch, 3)
            for left in np.linspace(0, pil.width - cw, 3)
        ]
        small = [pil.resize((32, 32), Image.Resampling.LANCZOS, box=box) for box in boxes]
        expected = phash_bits(np.stack([np.asarray(s) for s in small]))
        assert np.bitwise_count(expected ^ view_hashes(image)[1:]).max() <= 2


def _brute_force(hashes: np.ndarray, max_distance: int):
    full = hashes[:, 0]
    distance = np.bitwise_count(hashes[:, :, None] ^ full[None, None, :]).min(axis=1)
    distance = np.minimum(distance, distance.T)
    a, b = np.nonzero(np.triu(distance <= max_distance, k=1))
    return a, b, distance[a, b]


@pytest.mark.parametrize("views", [1, 10])
@pytest.mark.parametrize("max_distance", [0, 5, 7, 9])
def test_the_pair_search_finds_what_brute_force_finds(views: int, max_distance: int) -> None:
    """Both search paths (the byte index up to 7 bits, the full scan above) against a
    plain all-pairs computation, with near pairs planted; chunks far smaller than the set."""
    rng = np.random.default_rng(views * 10 + max_distance)
    n = 600
    hashes = rng.integers(0, 2**63, size=(n, views), dtype=np.uint64)
    for _ in range(120):
        i, j = rng.integers(0, n, 2)
        value = hashes[i, rng.integers(0, views)]
        for bit in rng.choice(64, rng.integers(0, 11), replace=False):
            value ^= np.uint64(1) << np.uint64(bit)
        hashes[j, 0] = value
    found = hamming_pairs(hashes, max_distance, chunk_elements=5000)
    expected = _brute_force(hashes, max_distance)
    assert len(expected[0]) > 5
    for got, want in zip(found, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_every_injected_copy_is_flagged_and_no_other_pair(duplicate_set, duplicate_scan) -> None:
    """500 distinct generated images, 160 copies in val/test (resized 0.5-2×, JPEG q70,
    noise σ = 5, 5 % crop): with the default thresholds and stand-in features exactly the
    160 pairs are found, all across splits; the hash alone finds the same."""
    features = gradient_features(duplicate_set.images)
    pairs = near_duplicates(duplicate_set.frame, duplicate_scan.hashes, features)
    found = set(zip(pairs["index_a"], pairs["index_b"], strict=True))
    missed = {kind for pair, kind in duplicate_set.copies.items() if pair not in found}
    assert missed == set()
    assert found == set(duplicate_set.copies)
    assert (pairs["severity"] == "high").all()
    assert (pairs["hamming"] <= MAX_HAMMING).all() and (pairs["cosine"] >= 0.8).all()
    assert list(pairs.columns[:7]) == ["a", "b", "split_a", "split_b", "hamming", "cosine"] + [
        "similarity"
    ]
    hash_only = near_duplicates(duplicate_set.frame, duplicate_scan.hashes)
    assert set(zip(hash_only["index_a"], hash_only["index_b"], strict=True)) == found
    assert hash_only["cosine"].isna().all()
    np.testing.assert_allclose(hash_only["similarity"], 1 - hash_only["hamming"] / 64)


def test_the_crop_views_are_what_finds_a_cropped_copy(duplicate_set) -> None:
    """Without the crop views some 5 % crops are more than MAX_HAMMING bits away."""
    crops = [pair for pair, kind in duplicate_set.copies.items() if kind == "crop"]
    rows = sorted({r for pair in crops for r in pair})
    frame = duplicate_set.frame.iloc[rows].reset_index(drop=True)
    scan = scan_images(frame["path"], crop_views=False)
    pairs = near_duplicates(frame, scan.hashes)
    assert len(pairs) < len(crops)


def test_features_confirm_or_reject_a_hash_candidate() -> None:
    frame = pd.DataFrame({"sample": list("abcd"), "split": ["train", "test", "train", "val"]})
    hashes = np.array([[7], [7], [2**40], [2**62]], dtype=np.uint64)  # a, b identical hashes
    rng = np.random.default_rng(0)
    features = rng.normal(size=(4, 16))
    unlike = near_duplicates(frame, hashes, features)
    assert unlike.empty
    features[1] = features[0]
    alike = near_duplicates(frame, hashes, features)
    assert list(zip(alike["a"], alike["b"], alike["severity"], strict=True)) == [("a", "b", "high")]
    assert alike["cosine"].iloc[0] == pytest.approx(1.0)


def test_severity_by_split() -> None:
    assert severity("train", "test") == "high"
    assert severity("train", "val") == "high"
    assert severity("test", "test") == "medium"
    assert severity("val", "val") == "medium"
    assert severity("train", "train") == "low"
    assert severity(None, "test") == "low"


def test_the_check_warns_raises_or_ignores(caplog) -> None:
    frame = pd.DataFrame({"sample": ["p1.png", "p2.png", "p3.png"]})
    frame["split"] = ["train", "test", "train"]
    hashes = np.array([1, 1, 0xFFFF_FFFF_0000_0000], dtype=np.uint64)
    pairs = near_duplicates(frame, hashes)
    with caplog.at_level(logging.WARNING, logger="medclf.audit.duplicates"):
        messages = check_near_duplicates(pairs, "warn")
    assert len(messages) == 1 and "p1.png (train)" in messages[0] and "p2.png (test)" in messages[0]
    assert "p1.png" in caplog.text
    with pytest.raises(DataError, match=r"p1\.png \(train\).*p2\.png \(test\)"):
        check_near_duplicates(pairs, "error")
    assert check_near_duplicates(pairs, "ignore") == []
    with pytest.raises(ValueError, match="sometimes"):  # the key: the pre-flight's check
        check_near_duplicates(pairs, "sometimes")


def test_a_corrupt_file_is_named(tmp_path) -> None:
    from PIL import Image

    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(good)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=r"1 of 2 image\(s\) cannot be read(.|\n)*broken\.png"):
        scan_images([str(good), str(bad)])


def test_mismatched_features_are_refused() -> None:
    frame = pd.DataFrame({"sample": ["a", "b"], "split": ["train", "test"]})
    hashes = np.zeros(2, np.uint64)
    with pytest.raises(DataError, match=r"features of shape \(3, 4\) do not match 2 samples"):
        near_duplicates(frame, hashes, np.zeros((3, 4)))
    with pytest.raises(DataError, match="NaN or infinite"):
        near_duplicates(frame, hashes, np.array([[np.nan], [1.0]]))
    with pytest.raises(ConfigError, match="max_hamming=70"):
        near_duplicates(frame, hashes, max_hamming=70)


def test_the_grey_view_of_volumes_and_colour() -> None:
    volume = np.zeros((5, 4, 6, 1), np.float32)
    volume[2] = 0.5  # the middle slice
    assert (grey_uint8(volume) == 128).all() and grey_uint8(volume).shape == (4, 6)
    rgb = np.zeros((3, 3, 3), np.float32)
    rgb[..., 1] = 1.0  # pure green → ITU-R 601 luminance 0.587
    assert (grey_uint8(rgb) == round(0.587 * 255)).all()
    four = np.full((2, 2, 4), 0.25, np.float32)
    assert (grey_uint8(four) == round(0.25 * 255)).all()


def test_the_benchmark_prints_its_table(capsys, monkeypatch) -> None:
    """benchmarks/audit_core.py on 300 images (timings in docs come from its full run)."""
    from helpers import REPO

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import audit_core

    audit_core.main(["--sizes", "300"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| images | scan s | pair search s |")
    assert lines[2].startswith("| 300 | ") and lines[2].count("|") == 7
