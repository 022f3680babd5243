"""For the labelling tests: a folder with one image of every kind the platform reads (and
one broken file), the labelling server as a process or in a thread, raw HTTP requests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import write_dicom

REPO = Path(__file__).resolve().parents[2]
# In the folder's (natural) order; the broken file sorts last.
FORMATS = (
    "a_chest.png",
    "b_slide.jpg",
    "c_cells.tif",
    "d_ct.dcm",
    "e_brain.nii.gz",
    "f_photo.png",
)
BROKEN = "zz_broken.png"


def write_formats(root: Path) -> Path:
    """``root`` holding FORMATS (8-bit grey PNG, RGB JPEG, 12-bit data in a 16-bit TIFF, a CT
    DICOM, a NIfTI volume of 12 slices, an RGB PNG) and BROKEN (not an image)."""
    import nibabel as nib
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 300).astype(np.float64)
    Image.fromarray((40 + 180 * disc + rng.integers(0, 30, (64, 64))).astype(np.uint8)).save(
        root / FORMATS[0]
    )
    rgb = np.stack([200 * disc, 90 + 0 * disc, 255 * (1 - disc)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(root / FORMATS[1], quality=92)
    tifffile.imwrite(root / FORMATS[2], (300 + 3500 * disc).astype(np.uint16))
    ct = (512 + 60 * disc + rng.integers(0, 20, (64, 64))).astype(np.uint16)
    write_dicom(  # stored values, slope 2, intercept -1024, with the file's own window
        root / FORMATS[3],
        ct,
        RescaleSlope=2,
        RescaleIntercept=-1024,
        WindowCenter=40,
        WindowWidth=400,
    )
    volume = np.zeros((32, 32, 12), np.float32)
    volume[8:24, 8:24, 3:9] = 5.0
    nib.save(nib.Nifti1Image(volume, np.eye(4)), root / FORMATS[4])
    Image.fromarray(np.roll(rgb, 20, axis=1)).save(root / FORMATS[5])
    (root / BROKEN).write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    return root


class Server:
    """A ``medclf-label`` process; ``url`` is the page with its token."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "label.py"), "port=0", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        deadline = time.monotonic() + 90
        self.url = ""
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            found = re.search(r"(http://127\.0\.0\.1:(\d+)/\?token=(\S+))", line)
            if found:
                self.url, self.port, self.token = found[1], int(found[2]), found[3]
                break
        if not self.url:
            self.stop()
            pytest.fail("the labelling server did not start:\n" + "".join(self.output))
        self.base = f"http://127.0.0.1:{self.port}"

    def stop(self) -> str:
        """SIGINT (Ctrl-C) to the PID, then what it printed."""
        if self.process.poll() is None:
            self.process.send_signal(2)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        rest = self.process.stdout.read() if self.process.stdout else ""
        return "".join(self.output) + rest


class ThreadServer:
    """The app of a Session served by uvicorn in a thread of this process (for tests that
    need this process's objects: a loaded model, a store to inspect)."""

    def __init__(self, session) -> None:
        import threading

        import uvicorn

        from medclf.labelling.app import bind, create_app, hosts_for

        sock = bind("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = session.token
        self.url = f"{self.base}/?token={self.token}"
        app = create_app(session, hosts_for("127.0.0.1", self.port))
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def request(
    base: str,
    path: str,
    token: str | None = None,
    method: str = "GET",
    body=None,
    headers: dict | None = None,
) -> tuple[int, dict, bytes]:
    """One raw HTTP request (the path sent exactly as given: no normalising of ``..`` or
    percent-escapes): (status, headers, body)."""
    import http.client
    import json
    from urllib.parse import urlsplit

    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    sent = dict(headers or {})
    if token:
        sent.setdefault("Authorization", f"token {token}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    connection.putrequest(method, path, skip_host="Host" in sent, skip_accept_encoding=True)
    for key, value in sent.items():
        connection.putheader(key, value)
    if data is not None:
        connection.putheader("Content-Length", str(len(data)))
    connection.endheaders(data)
    reply = connection.getresponse()
    payload = reply.read()
    connection.close()
    return reply.status, dict(reply.getheaders()), payload


def post(base: str, token: str, action: str, **body) -> dict:
    import json

    status, _, payload = request(base, f"/api/{action}", token, "POST", body)
    assert status == 200, payload
    return json.loads(payload)
