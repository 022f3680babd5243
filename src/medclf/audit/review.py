"""The order in which the labelling page shows images after an audit: suspects first.

1. Likely label errors flagged by :func:`medclf.audit.labels.label_issues`, in its ranking
   (the least likely given label first): these are what the labelling page is for.
2. Images of near-duplicate pairs (:func:`medclf.audit.duplicates.near_duplicates`):
   ``high`` severity (across splits) first, then ``medium``, then ``low``, each pair's two
   images together, most similar pairs first.
3. Every other image, in the order given (e.g. the assistant's uncertainty order).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from medclf.audit.duplicates import SEVERITIES


def review_order(
    samples: Sequence[str],
    issues: pd.DataFrame | None = None,
    duplicates: pd.DataFrame | None = None,
) -> list[str]:
    """``samples`` (the names used in the tables' ``sample``, ``a`` and ``b`` columns)
    reordered for review (see the module); names the tables hold but ``samples`` lacks are
    left out, and every sample appears once."""
    known = {str(s) for s in samples}
    first: list[str] = []
    if issues is not None and len(issues):
        first += [str(s) for s in issues.loc[issues["flagged"].astype(bool), "sample"]]
    if duplicates is not None and len(duplicates):
        rank = duplicates["severity"].map({s: i for i, s in enumerate(SEVERITIES)})
        ordered = duplicates.assign(_rank=rank.fillna(len(SEVERITIES)).to_numpy())
        ordered = ordered.sort_values(
            ["_rank", "similarity"], ascending=[True, False], kind="stable"
        )
        for a, b in zip(ordered["a"], ordered["b"], strict=True):
            first += [str(a), str(b)]
    order = list(dict.fromkeys(s for s in first if s in known))
    chosen = set(order)
    return order + [str(s) for s in samples if str(s) not in chosen]
