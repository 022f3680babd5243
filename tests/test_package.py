"""Package-level behaviour: import side effects that users rely on."""

from __future__ import annotations

import os
import subprocess
import sys


def test_import_disables_albumentations_update_check_but_not_hub_downloads() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NO_ALBUMENTATIONS_UPDATE", "HF_HUB_OFFLINE")
    }
    code = (
        "import os, medclf; "
        "print(os.environ.get('NO_ALBUMENTATIONS_UPDATE'), os.environ.get('HF_HUB_OFFLINE'))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["1", "None"], out.stderr
