"""``medclf-audit`` (``medclf-train audit_only=true``): know the data before trusting a model.

On the configured data (after the same pre-flight and data checks as training):

1. every image decoded once (medclf.audit.images.scan_images): sizes, channels, bit depth,
   intensities and perceptual hashes;
2. out-of-fold class probabilities: from ``audit.run_id`` (a cross-validation run of this
   data: its ``oof_predictions.csv``) or from a cross-validation run made here
   (``audit.folds`` folds of the configured model, logged as usual);
3. near-duplicates within and across splits: hash candidates confirmed by the fold model's
   pooled features (medclf.audit.duplicates);
4. likely label errors by confident learning on the out-of-fold probabilities
   (medclf.audit.labels, cleanlab's method);
5. an overview (class counts per split, sizes, channels, bit depth, intensity histograms and
   samples per class);

written to the run directory as ``audit.html`` and CSVs (each atomically) and logged as an
MLflow run of its own. Nothing is written before the data and the model have been read.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from medclf.errors import ConfigError

log = logging.getLogger("medclf.audit")


class _Clock:
    """Seconds per phase of the audit (audit.json, the benchmark)."""

    def __init__(self) -> None:
        import time

        self.time = time.perf_counter
        self.start = self.time()
        self.phases: dict[str, float] = {}

    def lap(self, phase: str) -> None:
        now = self.time()
        self.phases[phase] = round(now - self.start, 3)
        self.start = now


def _samples(datamodule) -> list:
    """What scan_images reads for each sample of the datamodule's frame: a file path, or an
    index into the in-memory arrays."""
    return list(datamodule.frame["path"])


def _out_of_fold(cfg: DictConfig, plan, tracking_uri: str | None) -> tuple[Path, str | None]:
    """(oof_predictions.csv, the CV run's id): ``audit.run_id``'s, or a CV made here."""
    from medclf.tracking.names import OOF_FILE

    run_id = OmegaConf.select(cfg, "audit.run_id")
    if run_id:
        from medclf.tracking.runs import download_artifact

        found = download_artifact(
            tracking_uri or "", str(run_id), OOF_FILE, Path(cfg.paths.output_dir)
        )
        if found is None:
            raise ConfigError(
                f"audit.run_id={run_id}: that run holds no {OOF_FILE}; give the id of a "
                "cross-validation run's parent (medclf-train cv.folds=K ...), or leave "
                "audit.run_id=null to run the cross-validation here."
            )
        return found, str(run_id)
    from medclf.pipeline.cv import run_cv

    folds = int(OmegaConf.select(cfg, "audit.folds") or 3)
    cv_plan = plan.for_audit(folds, str(Path(cfg.paths.output_dir) / "cv"))
    log.info("audit: %d-fold cross-validation for out-of-fold probabilities", folds)
    results: dict = {}
    run_cv(cv_plan, results)
    return Path(cv_plan.cfg.paths.output_dir) / OOF_FILE, results.get("parent_run_id")


def _cache_use(datamodule, cv_dir: Path) -> dict:
    """What the decoded cache (datamodule.cache) did for the audit's data set-up, and the
    images each fold of a cross-validation made here decoded (0: it read the cache the
    audit's set-up built; the features are read through it as well)."""
    import json

    from medclf.tracking.names import STARTUP_FILE

    stats = dict(getattr(datamodule, "cache_stats", None) or {})
    use = {k: stats[k] for k in ("mode", "images", "known", "decoded") if k in stats}
    folds = {}
    for startup in sorted(cv_dir.glob(f"fold_*/{STARTUP_FILE}")):
        cache = json.loads(startup.read_text()).get("decoded_cache") or {}
        folds[startup.parent.name] = cache.get("decoded")
    if folds:
        use["decoded_by_folds"] = folds
    return use


def _targets(labels: pd.Series, class_names: list[str], multilabel: bool) -> np.ndarray:
    if multilabel:
        sets = [set(str(v).split(";")) if isinstance(v, str) and v else set() for v in labels]
        return np.array([[c in s for c in class_names] for s in sets], dtype=int)
    position = {name: k for k, name in enumerate(class_names)}
    return labels.astype(str).map(position).to_numpy()


def _check_oof(oof: pd.DataFrame, datamodule, run_id: str | None) -> pd.DataFrame:
    """The out-of-fold table, in the data's order: every train/val sample once, with the
    data's labels (a CV run of other data is refused, naming what differs)."""
    frame = datamodule.frame
    held = frame[frame["split"] != "test"]
    mine = held.assign(sample=held["sample"].astype(str)).set_index("sample")
    oof = oof.assign(sample=oof["sample"].astype(str)).set_index("sample")
    missing = sorted(set(mine.index) - set(oof.index))
    extra = sorted(set(oof.index) - set(mine.index))
    if missing or extra:
        what = f"audit.run_id={run_id}" if run_id else "the audit's cross-validation"
        raise ConfigError(
            f"{what} predicted other samples than this data's train and val splits "
            f"({len(missing)} missing, e.g. {missing[:3]}; {len(extra)} not in the data, e.g. "
            f"{extra[:3]}): it is a cross-validation run of another data set or split; give "
            "a run of this data (same datamodule and seed), or audit.run_id=null."
        )
    return oof.loc[mine.index].reset_index()


def _features(checkpoint: str, datamodule) -> np.ndarray:
    """The fold model's pooled backbone features of every sample, in the frame's order."""
    import torch

    from medclf.models.checkpoint import load_module

    model = load_module(checkpoint)
    order = {str(s): i for i, s in enumerate(datamodule.frame["sample"])}
    out = None
    with torch.no_grad():
        for split in ("train", "val", "test"):
            samples = datamodule.split_frame(split)["sample"].astype(str).tolist()
            rows = []
            for batch in datamodule.plain_loader(split):
                metadata = batch.get("metadata")
                rows.append(model.features_and_logits(batch["image"], metadata)[0].numpy())
            values = np.concatenate(rows)
            if out is None:
                out = np.zeros((len(order), values.shape[1]), np.float32)
            out[[order[s] for s in samples]] = values
    return out


def run_audit(cfg: DictConfig) -> Path:
    """Audit the configured data; returns ``audit.html``."""
    from medclf.audit import duplicates, labels, overview, page
    from medclf.audit.images import scan_images
    from medclf.pipeline.build import make_datamodule, tidy_lightning_logging
    from medclf.pipeline.job import data_name
    from medclf.pipeline.plan import make_plan
    from medclf.tracking import names

    tidy_lightning_logging()
    clock = _Clock()
    plan = make_plan(cfg)
    settings = cfg.audit
    output_dir = Path(cfg.paths.output_dir)
    datamodule = make_datamodule(cfg)  # every data check: a corrupt image stops here
    arrays = datamodule.table.arrays
    frame = datamodule.frame.assign(sample=datamodule.frame["sample"].astype(str))
    log.info("audit: scanning %d images", len(frame))
    clock.lap("data checks")
    scan = scan_images(_samples(datamodule), arrays, dicom_window=datamodule.dicom_window)
    clock.lap("scan and hashes")
    tracking_uri = OmegaConf.select(cfg, "logger.mlflow.tracking_uri")
    oof_path, cv_run = _out_of_fold(cfg, plan, tracking_uri)
    clock.lap("cross-validation")
    oof = _check_oof(pd.read_csv(oof_path, dtype={"sample": str}), datamodule, cv_run)
    class_names = list(datamodule.class_names)
    probs = oof[[f"prob_{c}" for c in class_names]].to_numpy(np.float64)
    task = "multilabel" if datamodule.table.multilabel else "multiclass"
    issues = labels.label_issues(
        _targets(oof["label"], class_names, task == "multilabel"),
        probs,
        task=task,
        class_names=class_names,
        samples=oof["sample"].tolist(),
    )
    clock.lap("label errors")
    features = None
    checkpoints = sorted((Path(oof_path).parent).glob("fold_0/checkpoints/epoch_*.ckpt"))
    if checkpoints:
        features = _features(str(checkpoints[-1]), datamodule)
    else:
        log.info("audit: no fold model next to %s: near-duplicates by hash alone", oof_path)
    clock.lap("features")
    pairs = duplicates.near_duplicates(
        frame,
        scan.hashes,
        features,
        max_hamming=int(settings.max_hamming),
        min_cosine=float(settings.min_cosine),
    )
    clock.lap("near-duplicates")
    picture = overview.data_overview(
        frame,
        scan,
        class_names,
        output_dir,
        multilabel=task == "multilabel",
        arrays=arrays,
        dicom_window=datamodule.dicom_window,
    )
    title = f"Data audit: {data_name(cfg)}"
    html = page.write_audit(
        output_dir,
        overview=picture,
        duplicates=pairs,
        label_issues=issues,
        frame=frame,
        arrays=arrays,
        dicom_window=datamodule.dicom_window,
        title=title,
        limit=int(settings.limit),
    )
    clock.lap("overview and page")
    summary = {
        "images": len(frame),
        "label_issues": int(issues["flagged"].sum()),
        "near_duplicates": len(pairs),
        "across_splits": int((pairs["severity"] == "high").sum()) if len(pairs) else 0,
        "seconds": clock.phases,
        "decoded_cache": _cache_use(datamodule, Path(oof_path).parent),
    }
    import json

    (output_dir / names.AUDIT_SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    files = [html, output_dir / names.AUDIT_SUMMARY_FILE]
    files += [output_dir / n for n in (names.OVERVIEW_FILE, names.DUPLICATES_FILE)]
    files += [output_dir / names.LABEL_ISSUES_FILE, *picture.figures.values()]
    _log(cfg, title, {names.AUDIT: data_name(cfg), names.AUDIT_CV_RUN: cv_run or ""}, files)
    log.info(
        "audit: %d likely label error(s), %d near-duplicate pair(s) (%d across splits); %s (%s)",
        summary["label_issues"],
        summary["near_duplicates"],
        summary["across_splits"],
        html,
        ", ".join(f"{k} {v:.1f} s" for k, v in clock.phases.items()),
    )
    return html


def _log(cfg: DictConfig, title: str, tags: dict[str, str], files: list[Path]) -> None:
    """The audit's files as an MLflow run of its own (no logger configured: none)."""
    node = OmegaConf.select(cfg, "logger.mlflow")
    if node is None:
        return
    from medclf.tracking.names import AUDIT_DIR
    from medclf.tracking.runs import log_files_run
    from medclf.tracking.store import ensure_experiment

    experiment = ensure_experiment(node.tracking_uri, node.experiment_name, node.artifact_location)
    log_files_run(
        node.tracking_uri, experiment, title, tags, [f for f in files if f.exists()], AUDIT_DIR
    )
