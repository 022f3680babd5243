"""medclf: an experiment platform for medical and microscopy image classification.

Importing the package stops albumentations from checking PyPI for updates on import
(a network call per process). ``HF_HUB_OFFLINE`` is deliberately *not* set here, so an
online user's ``backbone.pretrained=true`` still downloads ImageNet weights through timm.
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
