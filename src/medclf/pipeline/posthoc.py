"""After training, before testing: what is fitted on the validation split with the best
checkpoint. ``calibration=temperature`` fits one temperature to the validation logits
(medclf.evaluation.calibration); a ``threshold`` rule (youden, f1, sensitivity@x,
specificity@x) chooses the threshold(s) on the validation probabilities, after calibration
(medclf.evaluation.thresholds); ``conformal.alpha`` fits split-conformal prediction sets to
the validation probabilities, after calibration (medclf.evaluation.conformal). All go into
the module, which tests with them, and into the best checkpoint, so eval.py, predict.py, the
MLflow model and the exports use them. Nothing is ever chosen on the test split.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from omegaconf import DictConfig

from medclf.evaluation.thresholds import ThresholdRule, parse_threshold

log = logging.getLogger("medclf.train")


def fit_on_validation(
    cfg: DictConfig, model, datamodule, checkpoint: str | None
) -> tuple[dict, bool]:
    """Fit what ``cfg`` asks for with the best checkpoint's weights; returns what was chosen
    ({} when nothing is to be fitted: ``temperature``, ``threshold``, ...) and whether the
    module now holds that checkpoint's weights. The checkpoint is then rewritten with the
    decision beside the test pass (medclf.runtime.in_background), which need not read it."""
    rule = parse_threshold(cfg.get("threshold", 0.5))
    calibration = str(cfg.get("calibration") or "none")
    conformal = cfg.get("conformal") or {}
    gate = cfg.get("ood") or {}
    if (
        not isinstance(rule, ThresholdRule)
        and calibration == "none"
        and not conformal.get("alpha")
        and not gate.get("method")
    ):
        return {}, False
    from medclf.evaluation.calibration import fit_temperature
    from medclf.evaluation.thresholds import choose_thresholds
    from medclf.models.checkpoint import read_checkpoint

    state = read_checkpoint(Path(checkpoint)) if checkpoint else None
    if state is not None:
        model.load_state_dict(state["state_dict"])
    features: list = []
    logits, targets = validation_logits(model, datamodule, features if gate.get("method") else None)
    chosen: dict = {}
    if calibration == "temperature":
        chosen["temperature"] = fit_temperature(logits, targets, model.task)
        model.set_decision(temperature=chosen["temperature"])
        log.info("calibration: temperature %.4f fitted on the validation split", model.temperature)
    if isinstance(rule, ThresholdRule):
        probs = model.probabilities(logits).numpy()
        values = choose_thresholds(rule, targets.numpy(), probs, model.task, model.class_names)
        model.set_decision(threshold=[float(v) for v in values])
        chosen["threshold"] = model.threshold
        log.info("threshold=%s chosen on the validation split: %s", rule, model.threshold)
    if conformal.get("alpha"):
        from medclf.evaluation import conformal as sets

        probs = model.probabilities(logits).numpy()
        fitted = sets.fit(
            probs,
            targets.numpy(),
            model.task,
            float(conformal["alpha"]),
            str(conformal.get("score", "lac")),
            bool(conformal.get("mondrian", False)),
        )
        model.set_decision(conformal=fitted)
        chosen["conformal_alpha"] = fitted["alpha"]
        chosen["conformal_score"] = fitted["score"]
        log.info(
            "conformal prediction sets fitted on %d validation samples (%s, alpha %g%s)",
            len(probs),
            fitted["score"],
            fitted["alpha"],
            ", per class" if fitted["mondrian"] else "",
        )
    if gate.get("method"):
        chosen.update(_fit_gate(model, gate, logits, targets, features[0]))
    if state is not None and _rank_zero():
        from medclf.runtime import in_background

        decision = {
            "threshold": model.threshold,
            "temperature": model.temperature,
            "conformal": model.conformal,
            "ood": model.ood,
        }
        in_background(store_decision, Path(checkpoint), decision, state)
    return chosen, state is not None


def _fit_gate(model, gate, logits, targets, features) -> dict:
    """The out-of-distribution gate (medclf.audit.ood) fitted on the validation split: the
    pooled features' Mahalanobis distance to their class (or the logits' energy), flagged
    above its ``quantile``."""
    from medclf.audit import ood

    labels = None if model.task == "multilabel" else targets.numpy().astype(int)
    state = ood.fit(
        logits=logits.numpy(),
        features=features.numpy(),
        labels=labels,
        method=str(gate["method"]),
        quantile=float(gate.get("quantile", 0.95)),
        temperature=float(getattr(model, "temperature", 1.0)),
        task=model.task,
    )
    state["max_share"] = float(gate.get("max_share", 0.5))  # predict.py warns above it
    model.set_decision(ood=state)
    log.info(
        "out-of-distribution gate (%s) fitted on %d validation samples: threshold %.4g, the "
        "%g quantile",
        state["method"],
        state["n"],
        state["threshold"],
        state["quantile"],
    )
    return {"ood_method": state["method"], "ood_threshold": state["threshold"]}


def validation_logits(model, datamodule, features: list | None = None):
    """(logits, targets) of the whole validation split, in float32 on the CPU; ``features``
    (a list) receives the backbone's pooled features, (N, F)."""
    loader = datamodule.full_loader("val")
    was_training = model.training
    model.eval()
    logits, targets, pooled = [], [], []
    with torch.no_grad():
        for batch in loader:
            image = batch["image"].to(model.device)
            metadata = batch.get("metadata")
            metadata = metadata.to(model.device) if metadata is not None else None
            if features is None:
                logits.append(model(image, metadata).float().cpu())
            else:
                kept, out = model.features_and_logits(image, metadata)
                logits.append(out.float().cpu())
                pooled.append(kept.float().cpu())
            targets.append(batch["target"])
    model.train(was_training)
    if features is not None:
        features.append(torch.cat(pooled))
    return torch.cat(logits), torch.cat(targets)


def store_decision(path: Path, decision: dict, state: dict) -> None:
    """The module's ``decision`` (threshold, temperature, conformal sets, out-of-distribution
    gate) into the hyperparameters of ``state``, the checkpoint read from ``path``, rewritten
    atomically (a crash leaves the old file)."""
    state["hyper_parameters"].update(decision)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def restore_decision(model, checkpoint: str | None) -> None:
    """Testing a checkpoint without training: its stored threshold and temperature."""
    if not checkpoint:
        return
    from medclf.models.checkpoint import read_checkpoint

    stored = read_checkpoint(Path(checkpoint)).get("hyper_parameters", {})
    model.set_decision(
        stored.get("threshold"),
        stored.get("temperature"),
        stored.get("conformal"),
        stored.get("ood"),
    )


def _rank_zero() -> bool:
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank == 0
