"""The HTTP side of the side panel's API: authenticated handlers that parse the request,
do the work off the event loop and answer JSON; errors are JSON too, one line each.

::

    GET  runs?status=running,queued&limit=50   newest first
    GET  runs/N                                 every field of run N
    GET  runs/N/log?offset=0&max_bytes=65536    a piece of its log; ask again from next_offset
    GET  runs/N/log?tail=1&max_bytes=65536      the end of its log (a first look at a long one)
    POST runs/N/cancel                          ask the kernel running it to cancel it
    GET  envs                                   the runtime-env cache
    GET  traces                                 experiment traces
    GET  traces/NAME                            one trace's nodes
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from jupyter_server.base.handlers import APIHandler
from tornado import web
from tornado.ioloop import IOLoop

from jupyter_exec.errors import ApiError

from .queries import API_PREFIX, STATUSES, PanelQueries

__all__ = ["ROUTES"]

_MAX_LIMIT = 1000
_MAX_PIECE = 1 << 20


class _Handler(APIHandler):
    """Shared by every route: the queries, work off the loop, errors as JSON with a status."""

    def initialize(self, queries: PanelQueries) -> None:
        self.queries = queries

    async def reply(self, work: Callable[..., dict[str, Any]], *args: Any, status: int = 200) -> None:
        """Answer with ``work(*args)`` run on a thread (SQLite may wait on a writer, a disk may be slow)."""
        try:
            result = await IOLoop.current().run_in_executor(None, work, *args)
        except ApiError as error:
            raise web.HTTPError(error.status, str(error)) from None
        self.set_status(status)
        self.finish(json.dumps(result))

    def whole_number(self, name: str, default: int, low: int, high: int) -> int:
        text = self.get_query_argument(name, str(default))
        if not text.isdigit() or not low <= int(text) <= high:
            raise web.HTTPError(
                400, f"{name}={text!r}: expected a whole number from {low} to {high}, e.g. ?{name}={default}"
            )
        return int(text)


def _run_id(text: str) -> int:
    if not text.isdigit():
        raise web.HTTPError(404, f"no run {text!r}: run ids are whole numbers; GET /{API_PREFIX}/runs lists them")
    return int(text)


class RunsHandler(_Handler):
    @web.authenticated
    async def get(self) -> None:
        statuses = [s for s in self.get_query_argument("status", "").split(",") if s]
        unknown = sorted(set(statuses) - set(STATUSES))
        if unknown:
            raise web.HTTPError(
                400, f"status={','.join(unknown)}: unknown; use any of {', '.join(STATUSES)}, comma-separated"
            )
        await self.reply(self.queries.runs, statuses, self.whole_number("limit", 50, 1, _MAX_LIMIT))


class RunHandler(_Handler):
    @web.authenticated
    async def get(self, run_id: str) -> None:
        await self.reply(self.queries.run, _run_id(run_id))


class LogHandler(_Handler):
    @web.authenticated
    async def get(self, run_id: str) -> None:
        await self.reply(
            self.queries.log,
            _run_id(run_id),
            self.whole_number("offset", 0, 0, 1 << 62),
            self.whole_number("max_bytes", 1 << 16, 1, _MAX_PIECE),
            bool(self.whole_number("tail", 0, 0, 1)),
        )


class CancelHandler(_Handler):
    @web.authenticated
    async def post(self, run_id: str) -> None:
        await self.reply(self.queries.cancel, _run_id(run_id), status=202)


class StatsHandler(_Handler):
    @web.authenticated
    async def get(self) -> None:
        await self.reply(self.queries.stats, self.whole_number("limit", 1000, 1, 100_000))


class EnvsHandler(_Handler):
    @web.authenticated
    async def get(self) -> None:
        await self.reply(self.queries.envs)


class TracesHandler(_Handler):
    @web.authenticated
    async def get(self) -> None:
        await self.reply(self.queries.traces)


class TraceHandler(_Handler):
    @web.authenticated
    async def get(self, name: str) -> None:
        await self.reply(self.queries.trace, name)


class UnknownHandler(_Handler):
    """Anything else under the API's prefix: a JSON 404 naming the routes, not an HTML page."""

    @web.authenticated
    async def get(self, path: str) -> None:
        raise web.HTTPError(
            404,
            f"no endpoint {path!r}; the API has runs, runs/N, runs/N/log, runs/N/cancel "
            "(POST), stats, envs, traces, traces/NAME",
        )

    post = get


ROUTES: list[tuple[str, type[_Handler]]] = [
    (r"runs", RunsHandler),
    (r"runs/([^/]+)", RunHandler),
    (r"runs/([^/]+)/log", LogHandler),
    (r"runs/([^/]+)/cancel", CancelHandler),
    (r"stats", StatsHandler),
    (r"envs", EnvsHandler),
    (r"traces", TracesHandler),
    (r"traces/([^/]+)", TraceHandler),
    (r"(.*)", UnknownHandler),
]
