"""The Starlette app of `serve`: the overview and its event stream, the animals page, `/metrics`, and the trigger.

Every journal read runs in a worker thread (sqlite3 blocks), one short look at a time, shared by all viewers
through the `Sampler`. The trigger exists only when enabled: without it `POST /runs` is 404, as for any path
the server does not have; with it a request without the right `Authorization: Bearer` token is 401.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..reports.status import plain
from .animals import search
from .metrics import registry_for
from .overview import Sampler
from .pages import animals_page, overview_page
from .trigger import Trigger

__all__ = ["LOOPBACK_HOSTS", "ServeConfig", "create_app"]

STATIC = Path(__file__).with_name("static")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
SECURITY_HEADERS = {
    # Scripts and styles from this server only, no inline code: a name that is markup can do nothing even if a
    # rendering forgot to escape it.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
        " form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class ServeConfig:
    """What `serve` was asked for: the journals, the refresh period, and the trigger's token (None: no trigger)."""

    journals: tuple[str, ...]
    every: float = 1.0
    token: str | None = None
    base_url: str | None = None  # handed to `run` for a journal that holds no run yet
    allowed_hosts: tuple[str, ...] = field(default=("*",))


def _html(text: str) -> HTMLResponse:
    return HTMLResponse(text, headers=SECURITY_HEADERS)


def create_app(config: ServeConfig) -> Starlette:
    """The app for these journals; the trigger's routes exist only when `config.token` is set."""
    journals = list(config.journals)
    sampler = Sampler(journals, every=config.every)
    trigger = Trigger(journals, base_url=config.base_url) if config.token else None
    registry = registry_for(journals)

    def snapshot() -> dict[str, Any]:
        data = sampler.overview().to_json()
        data["children"] = plain(trigger.children()) if trigger else None
        return data

    async def overview(request: Request) -> Response:
        return _html(overview_page(journals, trigger is not None))

    async def overview_json(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(snapshot), headers={"Cache-Control": "no-store"})

    stopping = asyncio.Event()  # set as the server stops: each event stream then ends on its own, at once

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            yield f"retry: {int(sampler.every * 2000)}\n\n"
            while not stopping.is_set():
                data = await run_in_threadpool(snapshot)
                yield f"event: overview\ndata: {json.dumps(data)}\n\n"
                try:
                    await asyncio.wait_for(stopping.wait(), sampler.every)
                except TimeoutError:
                    pass

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )

    async def animals(request: Request) -> Response:
        text = request.query_params.get("q", "")[:200]
        try:
            page = int(request.query_params.get("page", "1"))
        except ValueError:
            page = 1
        found = await run_in_threadpool(search, journals, text, min(max(page, 1), 10**9))
        return _html(animals_page(journals, found))

    async def metrics(request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def authorised(request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        assert config.token is not None
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), config.token.encode())

    async def start_runs(request: Request) -> Response:
        assert trigger is not None
        if not authorised(request):
            return JSONResponse(
                {"detail": "a valid token is needed: send it as `Authorization: Bearer TOKEN` (ANIMAL_SYNC_SERVE_TOKEN)"},
                status_code=401, headers={"WWW-Authenticate": 'Bearer realm="animal-sync"'},
            )
        launches = await run_in_threadpool(trigger.start)
        started = any(launch.started for launch in launches)
        return JSONResponse({"launches": plain(launches)}, status_code=202 if started else 409)

    async def list_runs(request: Request) -> Response:
        assert trigger is not None
        return JSONResponse({"children": plain(await run_in_threadpool(trigger.children))})

    routes = [
        Route("/", overview),
        Route("/animals", animals),
        Route("/api/overview", overview_json),
        Route("/events", events),
        Route("/metrics", metrics),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    if trigger is not None:
        routes.append(Route("/runs", start_runs, methods=["POST"]))
        routes.append(Route("/runs", list_runs, methods=["GET"]))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if trigger is not None:
            await run_in_threadpool(trigger.close)

    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(config.allowed_hosts))]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.stopping = stopping
    return app
