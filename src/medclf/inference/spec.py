"""The one input spec: what a trained model takes and returns, read from its checkpoint's
hyperparameters alone, and how an image becomes its input.

A checkpoint's hyperparameters hold everything (class names, channels, image or volume
size, DICOM window, spatial dims, task, threshold, metadata encoding, backbone; see
medclf.models.module), so eval.py, predict.py, export, the MLflow model and Grad-CAM read
nothing else, and prepare inputs exactly as the validation split was prepared in training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from medclf.data.transforms import DEFAULT_VOLUME_SIZE, image_hw, input_transform
from medclf.errors import ConfigError
from medclf.models.outputs import plain_threshold


@dataclass(frozen=True)
class InputSpec:
    class_names: list[str]
    task: str  # multiclass, multilabel or binary
    threshold: float | list[float]  # of sigmoid outputs, one or one per label (outputs.decide)
    channels: int
    spatial_dims: int
    image_size: Any = None  # 2D: an int or [height, width]
    volume_size: list[int] | None = None  # 3D: [depth, height, width]
    dicom_window: Any = None
    metadata: list[dict[str, Any]] = field(default_factory=list)  # MetadataEncoder state
    backbone: dict[str, Any] = field(default_factory=dict)
    temperature: float = 1.0  # calibration: the logits are divided by it
    conformal: dict[str, Any] | None = None  # prediction sets (medclf.evaluation.conformal)
    ood: dict[str, Any] | None = None  # the out-of-distribution gate (medclf.audit.ood)

    @classmethod
    def of(cls, module: Any) -> InputSpec:
        """The spec of a ClassificationModule (as loaded from its checkpoint)."""
        hp = module.hparams
        dims = int(hp.get("spatial_dims", 2))
        volume = hp.get("volume_size")
        return cls(
            class_names=list(module.class_names),
            task=module.task,
            threshold=plain_threshold(hp.get("threshold", 0.5)),
            temperature=float(hp.get("temperature", 1.0)),
            conformal=hp.get("conformal"),
            ood=hp.get("ood"),
            channels=int(hp["in_chans"]),
            spatial_dims=dims,
            image_size=hp.get("image_size"),
            volume_size=list(volume or DEFAULT_VOLUME_SIZE) if dims == 3 else None,
            dicom_window=hp.get("dicom_window"),
            metadata=list(hp.get("metadata") or []),
            backbone=dict(hp["backbone"]),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def spatial_size(self) -> list[int]:
        """The input's spatial shape: [D, H, W] for volumes, [H, W] for images."""
        if self.spatial_dims == 3:
            return list(self.volume_size or DEFAULT_VOLUME_SIZE)
        if self.image_size is None:
            raise ConfigError("the checkpoint records no image_size; set input_size=[H,W].")
        return list(image_hw(self.image_size))

    def transform(self):
        """Resize as the validation split was: ``transform(image=array)["image"]``."""
        return input_transform(self.spatial_dims, self.image_size, self.volume_size)

    @property
    def metadata_columns(self) -> list[str]:
        return [column["name"] for column in self.metadata]

    def encode_metadata(self, table, where: str, fix: str) -> np.ndarray | None:
        """The metadata columns of ``table`` encoded as in training (None for a model without
        metadata). A missing column is a ConfigError naming ``where`` and how to ``fix`` it."""
        if not self.metadata:
            return None
        from medclf.data.metadata import MetadataEncoder

        names = self.metadata_columns
        missing = [n for n in names if table is None or n not in table.columns]
        if missing:
            raise ConfigError(
                f"the model was trained with metadata columns {names}; {where} lacks "
                f"{missing}. {fix}"
            )
        return MetadataEncoder(self.metadata).transform(table[names])
