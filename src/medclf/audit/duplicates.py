"""Near-duplicate images within and across splits: perceptual hashes propose pairs, the
backbone's pooled features confirm them.

1. Candidates: pairs whose pHashes (medclf.audit.hashing, with crop views) are at most
   ``max_hamming`` of 64 bits apart. Default ``MAX_HAMMING = 6``: on generated images a copy
   resized 0.5–2×, re-encoded as JPEG at quality 70 or given noise of σ = 5 lies within 4
   bits, one cropped by 5 % within 6, while about 1 in 1.5 million pairs of distinct
   generated images does (808 pairs among 50,000 images, benchmarks/audit_core.py).
2. Confirmation (when ``features`` are given): the cosine similarity of the two images'
   features, centred on the mean feature of the set (pooled ReLU features are all
   positive, so uncentred any two images of one modality look alike), must reach
   ``min_cosine``. Default ``MIN_COSINE = 0.8``: a starting point that rejects look-alikes
   whose hashes agree by chance; it was set on hand-made features, not on a pretrained
   backbone, so read the cosine column of the pairs near it. Without features the hash
   alone decides (the check made before training, when there is no model yet).

Severity: ``high`` for a pair across splits (an image scored in one split was seen in
another: the metrics flatter the model), ``medium`` within val or test (one case counted
twice narrows the intervals), ``low`` within train or without a split.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from medclf.audit.hashing import hamming_pairs
from medclf.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MAX_HAMMING = 6
MIN_COSINE = 0.8
HASH_BITS = 64
SEVERITIES = ("high", "medium", "low")
MODES = ("warn", "error", "ignore")
COLUMNS = (
    "a",
    "b",
    "split_a",
    "split_b",
    "hamming",
    "cosine",
    "similarity",
    "severity",
    "index_a",
    "index_b",
)


def pair_cosines(features: np.ndarray, a: np.ndarray, b: np.ndarray, center: bool = True):
    """Cosine similarity of rows ``a[i]`` and ``b[i]`` of the (N, D) features, each first
    minus the mean row (``center``); a zero row has similarity 0. Only the rows of the
    pairs are copied, a chunk at a time."""
    features = np.asarray(features)
    mean = features.mean(axis=0, dtype=np.float64) if center and len(features) > 1 else 0.0
    out = np.empty(len(a), np.float64)
    step = 16384
    for start in range(0, len(a), step):
        left = features[a[start : start + step]] - mean
        right = features[b[start : start + step]] - mean
        norms = np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1)
        dots = np.einsum("ij,ij->i", left, right)
        out[start : start + step] = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    return out


def severity(split_a: object, split_b: object) -> str:
    """``high`` across splits, ``medium`` within val or test, else ``low`` (see the module)."""
    known = isinstance(split_a, str) and isinstance(split_b, str)
    if known and split_a != split_b:
        return "high"
    if known and split_a in ("val", "test"):
        return "medium"
    return "low"


def _check_inputs(frame: pd.DataFrame, hashes: np.ndarray, features) -> None:
    if len(hashes) != len(frame):
        raise DataError(
            f"the audit has {len(hashes)} image hashes for {len(frame)} samples; hash the "
            "samples of this frame (medclf.audit.images.scan_images(frame['path']))."
        )
    if features is None:
        return
    if np.ndim(features) != 2 or len(features) != len(frame):
        raise DataError(
            f"features of shape {np.shape(features)} do not match {len(frame)} samples; pass "
            "the backbone's pooled features as an (N, D) array, one row per sample."
        )
    if not np.isfinite(features).all():
        bad = int((~np.isfinite(features)).any(axis=1).sum())
        raise DataError(
            f"{bad} sample(s) have NaN or infinite features; the model's forward pass "
            "produced them: check the checkpoint and the input scaling."
        )


def near_duplicates(
    frame: pd.DataFrame,
    hashes: np.ndarray,
    features: np.ndarray | None = None,
    *,
    max_hamming: int = MAX_HAMMING,
    min_cosine: float = MIN_COSINE,
    center: bool = True,
) -> pd.DataFrame:
    """Near-duplicate pairs, most severe and most similar first.

    ``frame``: one row per sample with ``split`` and ``sample`` (or ``path``) columns, in the
    order of ``hashes`` (N, K) from :func:`medclf.audit.images.scan_images`. ``features``:
    (N, D) pooled backbone features in the same order, or None (hash only). Columns:
    a, b (sample names), split_a, split_b, hamming (bits), cosine (NaN without features),
    similarity (the cosine, else 1 − hamming / 64), severity, index_a, index_b (row
    positions in ``frame``).
    """
    if not 0 <= int(max_hamming) < HASH_BITS:
        raise ConfigError(f"max_hamming={max_hamming} must be between 0 and {HASH_BITS - 1}.")
    if not -1.0 <= float(min_cosine) <= 1.0:
        raise ConfigError(f"min_cosine={min_cosine} must be between -1 and 1.")
    hashes = np.asarray(hashes, dtype=np.uint64)
    _check_inputs(frame, hashes, features)
    a, b, distance = hamming_pairs(hashes, int(max_hamming))
    cosine = np.full(len(a), np.nan)
    if features is not None and len(a):
        cosine = pair_cosines(features, a, b, center)
        keep = cosine >= min_cosine
        a, b, distance, cosine = a[keep], b[keep], distance[keep], cosine[keep]
    names = frame["sample"] if "sample" in frame.columns else frame["path"]
    names = names.astype(str).to_numpy()
    splits = (
        frame["split"].to_numpy(dtype=object)
        if "split" in frame.columns
        else np.full(len(frame), None, dtype=object)
    )
    pairs = pd.DataFrame(
        {
            "a": names[a],
            "b": names[b],
            "split_a": splits[a],
            "split_b": splits[b],
            "hamming": distance.astype(int),
            "cosine": cosine,
            "similarity": cosine if features is not None else 1.0 - distance / HASH_BITS,
            "severity": [severity(x, y) for x, y in zip(splits[a], splits[b], strict=True)],
            "index_a": a,
            "index_b": b,
        },
        columns=list(COLUMNS),
    )
    rank = pairs["severity"].map({s: i for i, s in enumerate(SEVERITIES)})
    order = np.lexsort((pairs["index_b"], pairs["index_a"], -pairs["similarity"], rank))
    return pairs.iloc[order].reset_index(drop=True)


def duplicate_messages(pairs: pd.DataFrame, limit: int = 5) -> list[str]:
    """One message per near-duplicate pair across splits (the first ``limit``)."""
    across = pairs[pairs["severity"] == "high"]
    messages = [
        f"near-duplicate images in two splits: {row.a} ({row.split_a}) and {row.b} "
        f"({row.split_b}), {row.hamming} of 64 hash bits apart"
        + (f", cosine {row.cosine:.3f}" if np.isfinite(row.cosine) else "")
        for row in across.head(limit).itertuples()
    ]
    if len(across) > limit:
        messages.append(f"… and {len(across) - limit} more near-duplicate pair(s) across splits")
    return messages


def check_near_duplicates(pairs: pd.DataFrame, duplicates: str = "warn") -> list[str]:
    """As ``datamodule.duplicates`` does for identical files: near-duplicates across splits
    are logged (``warn``), raise (``error``) or are not looked at (``ignore``). Returns the
    messages (for the run report)."""
    if duplicates not in MODES:  # the pre-flight checks the key (pipeline.rules)
        raise ValueError(f"duplicates must be one of {', '.join(MODES)}, got {duplicates!r}")
    if duplicates == "ignore":
        return []
    found = duplicate_messages(pairs)
    if found and duplicates == "error":
        raise DataError(
            "near-duplicate images are in more than one split (datamodule.duplicates=error):"
            "\n    " + "\n    ".join(found) + "\nRemove one image of each pair, or give both "
            "one group (datamodule.group_column) so that they stay in one split."
        )
    for message in found:
        log.warning(
            "%s: an image scored in one split and seen in another flatters the metrics; "
            "remove one copy (datamodule.duplicates=error makes this an error)",
            message,
        )
    return found
