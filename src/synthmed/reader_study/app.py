"""The reader study web app: one image at a time per reader, each answer straight into SQLite.

What a reader can fetch must not tell real from synthetic, so:

- the page is rendered from one template whose only per-image value is the opaque id; its
  links are relative (``images/<id>.png``, ``answers``), so the page holds no token either;
- every image is an uncompressed PNG of the study's one byte length, served from the database
  with the same headers (no ETag, Last-Modified, Date or Server header; the same security
  and ``no-store`` headers on every response);
- the order is the reader's own shuffle of the random ids, and nothing answers with the key.

Readers and the admin are known by unguessable tokens in the path; a wrong one is a 404 with a
JSON message, as is every other refusal.

All state is in the database; the process holds two connections to it (``Connections``). Reads
are sub-millisecond and run on the event loop. Writes go one at a time through a single worker
thread on their own connection: no two requests contend for SQLite's write lock (no busy-wait
sleeps) and the fsync of each commit (``synchronous=FULL``) does not stall the loop. Opening a
connection per request would cost more than the request: closing the last connection to a WAL
database checkpoints it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from typing import Annotated, Any, Literal, TypeVar

import anyio
import anyio.to_thread
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel, ConfigDict, Field

from synthmed.errors import ReaderStudyError
from synthmed.reader_study import db

T = TypeVar("T")
SECURITY_HEADERS = [(b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer"),
                    (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY")]


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str = Field(min_length=1, max_length=64)
    label: Literal["real", "synthetic"]


class NewReader(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)


class SameHeaders:
    """ASGI middleware that puts one fixed set of headers on every response.

    ``no-store`` keeps images out of caches (a cache hit would answer faster than a miss);
    ``no-referrer`` keeps the token in the page address from travelling anywhere.
    """

    def __init__(self, app) -> None:
        self.app = app
        self.names = {name for name, _ in SECURITY_HEADERS}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in self.names]
                message = {**message, "headers": kept + SECURITY_HEADERS}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def reader_link(base_url: str, token: str) -> str:
    """The address a reader opens; the trailing slash makes the page's relative links resolve."""
    return f"{base_url.rstrip('/')}/r/{token}/"


TEMPLATES = Environment(loader=PackageLoader("synthmed.reader_study", "templates"),
                        autoescape=select_autoescape(["html"]))
router = APIRouter()


class Connections:
    """A reading connection for the event loop and a writing one used by one thread at a time."""

    def __init__(self, path: os.PathLike) -> None:
        self.read = db.connect(path)
        self._writer = db.connect(path)
        self._write_slot = anyio.CapacityLimiter(1)

    async def write(self, function: Callable[..., T], *args: Any) -> T:
        """``function(writer_connection, *args)`` in a worker thread, after any earlier write."""
        return await anyio.to_thread.run_sync(function, self._writer, *args, limiter=self._write_slot)

    def close(self) -> None:
        self.read.close()
        self._writer.close()


async def connections(request: Request) -> Connections:
    return request.app.state.connections


Conn = Annotated[Connections, Depends(connections)]


async def current_reader(token: str, conn: Conn) -> db.Reader:
    found = db.reader_for_token(conn.read, token)
    if found is None:
        raise HTTPException(404, "unknown reader link: check the address you were sent")
    return found


async def require_admin(token: str, conn: Conn) -> None:
    if not db.is_admin(conn.read, token):
        raise HTTPException(404, "unknown admin link")


Me = Annotated[db.Reader, Depends(current_reader)]
ADMIN_ONLY = [Depends(require_admin)]


@router.get("/r/{token}/", response_class=HTMLResponse)
async def reader_page(me: Me, conn: Conn) -> HTMLResponse:
    answered, total = db.progress(conn.read, me.id)
    image_id = db.current_image(conn.read, me.id)
    if image_id is None:
        return HTMLResponse(TEMPLATES.get_template("done.html").render(total=total))
    return HTMLResponse(TEMPLATES.get_template("reader.html").render(image_id=image_id, position=answered + 1,
                                                                     total=total))


@router.get("/r/{token}/images/{image_id}.png")
async def image(image_id: str, me: Me, conn: Conn) -> Response:
    png = db.image_png(conn.read, me.id, image_id)
    if png is None:
        raise HTTPException(404, "unknown image id")
    return Response(png, media_type="image/png")


@router.post("/r/{token}/answers")
async def answer(body: Answer, me: Me, conn: Conn) -> dict:
    status = await conn.write(db.record_answer, me.id, body.image, body.label)
    if status == "unknown image":
        raise HTTPException(404, "unknown image id: answer the image shown on your page")
    if status == "conflict":
        raise HTTPException(409, "this image already has a different answer; answers are final")
    answered, total = db.progress(conn.read, me.id)
    return {"status": status, "answered": answered, "total": total}


@router.get("/admin/{token}/", response_class=HTMLResponse, dependencies=ADMIN_ONLY)
async def admin_page(conn: Conn) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template("admin.html").render(meta=db.read_meta(conn.read),
                                                                    readers=db.readers_progress(conn.read)))


@router.get("/admin/{token}/progress", dependencies=ADMIN_ONLY)
async def admin_progress(conn: Conn) -> dict:
    return {"readers": db.readers_progress(conn.read)}


@router.post("/admin/{token}/readers", status_code=201, dependencies=ADMIN_ONLY)
async def admin_new_reader(body: NewReader, request: Request, conn: Conn) -> dict:
    try:
        token = await conn.write(db.add_reader, body.name)
    except ReaderStudyError as error:
        raise HTTPException(409, str(error)) from None
    return {"name": body.name.strip(), "link": reader_link(str(request.base_url), token)}


async def malformed(request: Request, error: RequestValidationError) -> JSONResponse:
    """One readable JSON message instead of pydantic's error list."""
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in error.errors())
    return JSONResponse({"detail": f"malformed request: {problems}"}, status_code=422)


def create_app(study: str | os.PathLike) -> FastAPI:
    """The app for one study; its connections open when the server starts."""
    path = db.checked_database(study)  # a damaged database is refused now, not at a reader's first request
    with closing(db.connect(path)) as conn:
        db.read_meta(conn)  # and a damaged parameter row, not as a server error on the admin page

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.connections = Connections(path)
        try:
            yield
        finally:
            app.state.connections.close()

    app = FastAPI(title="synthmed reader study", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.add_middleware(SameHeaders)
    app.add_exception_handler(RequestValidationError, malformed)
    app.include_router(router)
    return app


def server(study: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000) -> uvicorn.Server:
    """A uvicorn server for the study: no access log (the paths hold tokens), no Date or Server header."""
    config = uvicorn.Config(create_app(study), host=host, port=port, access_log=False, server_header=False,
                            date_header=False)
    return uvicorn.Server(config)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port``, or one error naming the option: uvicorn would log its failure and
    exit 3 (or, for a port out of range, raise from asyncio)."""
    if not 1 <= port <= 65535:
        raise ReaderStudyError(f"--port {port}: must be a port number from 1 to 65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn chooses: localhost stays IPv4
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as error:
        raise ReaderStudyError(f"--host {host}: not a known address ({getattr(error, 'strerror', None) or error})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a port in TIME_WAIT is free
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise ReaderStudyError(f"--host {host} --port {port}: cannot listen there ({error.strerror or error})") from None
    return sock


def serve(study: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted, on a socket bound here: what uvicorn binds itself fails in its log only."""
    running = server(study, host, port)
    with listening_socket(host, port) as sock:
        # uvicorn names the address only of the sockets it binds itself
        shown = f"[{host}]" if ":" in host else host
        logging.getLogger("uvicorn.error").info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)", shown, port)
        running.run(sockets=[sock])
