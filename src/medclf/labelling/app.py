"""The labelling web app: one page (``static/``) over a :class:`Session`'s folder, served
on 127.0.0.1 by uvicorn.

Safe by default, as Jupyter is: the printed URL carries a random token, and a request
without it (in the query, the cookie the page then sets, or an ``Authorization: token …``
header) is refused with 403; so is a request whose Host header is not the server's own
(DNS rebinding). Only the folder's images are served: a path that is not one of them
(``..``, absolute, a symlink out of the folder, any encoding of those) is a 404. The
browser never writes the labels file; it sends one change at a time and the server's
store writes it (medclf.labelling.store).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import socket
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from medclf.errors import ConfigError, DataError
from medclf.labelling.assist import Assistant, uncertainty_order
from medclf.labelling.images import ImageReader
from medclf.labelling.store import LabelStore, inside, labels_file

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
PAGES = {"label.js": "text/javascript", "label.css": "text/css"}
ORDERS = ("name", "uncertainty", "audit")
# The page loads nothing from elsewhere and is never framed by another site.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# Colours of the classes, in order (matplotlib's tab10: told apart with most colour vision).
COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


@dataclass
class Session:
    """What the page works on: the store, the image reader and, with a model, its help."""

    store: LabelStore
    reader: ImageReader
    assistant: Assistant | None = None
    order: str = "name"
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    review: list[str] | None = None  # order=audit: the audit's suspects first

    @property
    def cookie(self) -> str:
        return "medclf_label_" + hashlib.sha1(self.token.encode()).hexdigest()[:10]

    def path_of(self, image: str) -> Path | None:
        """The file of one of the folder's images; None for anything else."""
        if image not in self.store:
            return None
        path = self.store.root / image
        return path if inside(self.store.root, path) and path.is_file() else None

    def progress(self, labels: dict | None = None) -> dict[str, Any]:
        labels = self.store.snapshot() if labels is None else labels
        return {
            "labelled": len(labels),
            "total": len(self.store.images),
            "counts": self.store.counts(labels),
        }

    def state(self) -> dict[str, Any]:
        """Everything the page shows, from one consistent copy of the labels."""
        store = self.store
        labels = store.snapshot()
        found = self.assistant.suggestions() if self.assistant else {}
        images = list(store.images)
        if self.order == "uncertainty":
            margin = {image: s["margin"] for image, s in found.items()}
            images = uncertainty_order(store.images, set(labels), margin)
        elif self.order == "audit" and self.review is not None:
            images = list(self.review)
        return {
            "classes": [
                {"name": c, "colour": COLOURS[i % len(COLOURS)], "key": str(i + 1) if i < 9 else ""}
                for i, c in enumerate(store.classes)
            ],
            "multi_label": store.multi_label,
            "images": images,
            "labels": {image: list(chosen) for image, chosen in labels.items()},
            "progress": self.progress(labels),
            "order": self.order,
            "folder": str(store.root),
            "output": str(store.output),
            "command": store.train_command(),
            "suggestions": found,
            "assist": self.assistant.progress() if self.assistant else None,
        }

    def change(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """Apply one change from the page (label, accept, undo); KeyError for an image that
        is not the folder's, ValueError for labels the store refuses, LookupError for a
        suggestion not there yet."""
        store = self.store
        if action == "undo":
            image = store.undo()
        elif action == "accept":
            image = body.get("image")
            found = self.assistant.suggestions() if self.assistant else {}
            if image not in found:
                raise LookupError(f"no suggestion for {image!r} yet")
            store.assign(image, found[image]["labels"])
        else:
            image = body.get("image")
            store.assign(image, list(body.get("labels") or []))
        labels = store.snapshot()
        chosen = labels.get(image) if image else None
        return {
            "image": image,
            "labels": None if chosen is None else list(chosen),
            "progress": self.progress(labels),
        }


def open_session(
    data_dir: str | Path,
    classes: list[str] | None = None,
    multi_label: bool = False,
    output: str | Path | None = None,
    ckpt_paths: list[str] | None = None,
    order: str = "name",
    dicom_window: Any = None,
    cache_dir: str | Path | None = None,
    token: str | None = None,
    audit: str | Path | None = None,
) -> Session:
    """Check everything and load the labels (and the model) before anything is served: a
    bad folder, classes, labels file or checkpoint is an error here."""
    if order not in ORDERS:
        raise ConfigError(f"order={order}: give one of {', '.join(ORDERS)}.")
    if order == "uncertainty" and not ckpt_paths:
        raise ConfigError(
            "order=uncertainty needs a model: give ckpt_path=MODEL.ckpt (or run_id=...)."
        )
    if order == "audit" and not audit:
        raise ConfigError(
            "order=audit needs an audit: give audit=FOLDER, the run directory where "
            "medclf-audit wrote audit.html, label_issues.csv and duplicates.csv."
        )
    assistant = None
    if ckpt_paths:
        root = Path(data_dir).expanduser().resolve()
        out = labels_file(root, output)
        cache = Path(cache_dir).expanduser() if cache_dir else out.parent / ".medclf-label-cache"
        assistant = Assistant(list(ckpt_paths), root, cache)
    store = LabelStore(
        data_dir, classes, multi_label, output, assistant.class_names if assistant else None
    )
    if assistant is not None:
        _check_model(assistant, store)
        assistant.start(store.images)
    session = Session(store, ImageReader(dicom_window), assistant, order)
    if audit:
        session.review = audit_order(Path(audit).expanduser(), store.images)
    if token:
        session.token = str(token)
    return session


def audit_order(folder: Path, images: list[str]) -> list[str]:
    """The folder's images with an audit's suspects first (medclf.audit.review): likely
    label errors, then near-duplicates; an audit of other images is refused."""
    import pandas as pd

    from medclf.audit.review import review_order
    from medclf.tracking.names import DUPLICATES_FILE, LABEL_ISSUES_FILE

    issues_path, pairs_path = folder / LABEL_ISSUES_FILE, folder / DUPLICATES_FILE
    if not issues_path.is_file():
        raise ConfigError(
            f"audit={folder}: no {LABEL_ISSUES_FILE} there; give the run directory of a "
            "medclf-audit of this folder's labels."
        )
    issues = pd.read_csv(issues_path, dtype={"sample": str})
    pairs = pd.read_csv(pairs_path, dtype={"a": str, "b": str}) if pairs_path.is_file() else None
    if not set(issues["sample"]) & set(images):
        raise ConfigError(
            f"audit={folder} names none of this folder's images (e.g. "
            f"{issues['sample'].iloc[0] if len(issues) else 'none'}); audit the labels of this "
            "folder (medclf-audit datamodule=csv datamodule.csv_path=labels.csv "
            "datamodule.image_dir=FOLDER)."
        )
    return review_order(images, issues, pairs)


def _check_model(assistant: Assistant, store: LabelStore) -> None:
    foreign = [c for c in assistant.class_names if c not in store.classes]
    if foreign:
        raise ConfigError(
            f"ckpt_path: the model's classes {assistant.class_names} are not all among the "
            f"labelling classes {store.classes} (from {store.classes_from}): {foreign}. Label "
            "with the model's classes (leave classes unset) or give a model of these classes."
        )
    if assistant.spec.task == "multilabel" and not store.multi_label:
        raise ConfigError(
            "ckpt_path: the model is multi-label; label with multi_label=true to use it."
        )


def create_app(session: Session, allowed_hosts: set[str]):
    """The Starlette app of ``session``; ``allowed_hosts`` are the Host headers accepted
    (``127.0.0.1:PORT``, ``localhost:PORT``)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Route

    def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in PAGES:
            return Response("not found", 404)
        return FileResponse(STATIC / name, media_type=PAGES[name])

    def state(request: Request) -> Response:
        return JSONResponse(session.state())

    def image_file(request: Request) -> Path | None:
        return session.path_of(request.path_params["path"])

    def info(request: Request) -> Response:
        path = image_file(request)
        if path is None:
            return Response("not found", 404)
        return JSONResponse(session.reader.info(path))

    def image(request: Request) -> Response:
        path = image_file(request)
        if path is None:
            return Response("not found", 404)
        try:
            z = request.query_params.get("z")
            size = request.query_params.get("size")
            body = session.reader.png(path, int(z) if z else None, int(size) if size else None)
        except (DataError, OSError) as exc:
            return JSONResponse({"error": str(exc)}, 422)
        except ValueError:
            return Response("z and size must be integers", 400)
        return Response(body, media_type="image/png", headers={"Cache-Control": "no-store"})

    async def change(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        action = request.path_params["action"]
        if action not in ("label", "accept", "undo"):
            return Response("not found", 404)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "send JSON"}, 400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "send a JSON object"}, 400)
        try:  # the file is written under locks: not on the event loop
            return JSONResponse(await run_in_threadpool(session.change, action, body))
        except KeyError:
            image = body.get("image")
            return JSONResponse({"error": f"not an image of this folder: {image!r}"}, 404)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        except LookupError as exc:
            return JSONResponse({"error": str(exc)}, 409)

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/static/{name}", asset),
            Route("/api/state", state),
            Route("/api/info/{path:path}", info),
            Route("/image/{path:path}", image),
            Route("/api/{action}", change, methods=["POST"]),
        ]
    )
    return Guard(app, session.token, session.cookie, allowed_hosts)


class Guard:
    """ASGI middleware refusing requests with a foreign Host header or without the token;
    a token in the query sets the session cookie (HttpOnly, SameSite=Strict)."""

    def __init__(self, app, token: str, cookie: str, allowed_hosts: set[str]) -> None:
        self.app, self.token, self.cookie = app, token, cookie
        self.allowed_hosts = {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "").lower()
        if host not in self.allowed_hosts:
            return await _refuse(send, f"Host {host!r} is not allowed.")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        cookies = SimpleCookie()
        cookies.load(headers.get("cookie", ""))
        given = [
            query,
            cookies[self.cookie].value if self.cookie in cookies else "",
            headers.get("authorization", "").removeprefix("token ").strip(),
        ]
        if not any(secrets.compare_digest(g.encode(), self.token.encode()) for g in given if g):
            return await _refuse(
                send, "Open the URL that medclf-label printed: it carries the ?token=... "
            )
        if scope["method"] == "POST" and "application/json" not in headers.get("content-type", ""):
            return await _refuse(send, "Changes are JSON requests from the page.")
        if not query:
            return await self.app(scope, receive, send)

        async def with_cookie(message) -> None:
            if message["type"] == "http.response.start":
                value = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                message["headers"] = [*message.get("headers", []), (b"set-cookie", value.encode())]
            await send(message)

        return await self.app(scope, receive, with_cookie)


async def _refuse(send, text: str) -> None:
    body = json.dumps({"error": text}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; a busy port falls back to a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        if not port:
            raise ConfigError(f"host={host}: cannot listen there ({exc}).") from None
        log.warning("port %s is busy (%s); using a free one", port, exc.strerror)
        sock.bind((host, 0))
    sock.listen(128)
    return sock


def hosts_for(host: str, port: int, extra: list[str] | None = None) -> set[str]:
    """The Host headers a browser sends for this server."""
    names = {host, "127.0.0.1", "localhost"} if host in ("127.0.0.1", "localhost") else {host}
    if host in ("::1", "[::1]"):
        names = {"[::1]", "localhost"}
    found = {f"{name}:{port}" for name in names}
    return found | {h.lower() for h in extra or []}


def serve(session: Session, host: str = "127.0.0.1", port: int = 8765, allowed_hosts=None) -> str:
    """Serve until Ctrl-C; prints the URL (with its token). Returns the labels file."""
    import uvicorn

    sock = bind(host, port)
    port = sock.getsockname()[1]
    app = create_app(session, hosts_for(host, port, allowed_hosts))
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/?token={session.token}"
    store = session.store
    print(
        f"medclf label: {len(store.images)} images in {store.root}, {len(store.labels)} labelled, "
        f"classes {store.classes} (from {store.classes_from}).\n"
        f"Labels go to {store.output}. Open this page (Ctrl-C stops the server):\n    {url}",
        flush=True,
    )
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn stops cleanly, then re-raises it
        uvicorn.Server(config).run(sockets=[sock])
    print(f"medclf label: stopped; {len(store.labels)} labels in {store.output}", flush=True)
    return str(store.output)
