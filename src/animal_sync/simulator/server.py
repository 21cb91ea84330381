"""`Simulator`: the ASGI app served by uvicorn (h11, as the real server) in a thread with its own event loop.

HTTP/1.1 is uvicorn's, not ours: keep-alive and its idle close (`timeout_keep_alive`), `100 Continue` sent when
the handler first reads the body, and the 500-then-hang-up that follows an exception in a handler.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
from typing import Any

import uvicorn
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import PortTaken, SimulatorError
from .app import ORPHAN_BODY, Chaos, SimulatorConfig, SimulatorException, _AnimalsApi, build_app
from .data import check_animal_count

__all__ = ["Simulator"]


class _DeliberateErrors(logging.Filter):
    """Keep uvicorn's log for real bugs: the exceptions the simulator raises on purpose, and the cancellation of
    requests still stalled when it stops, are not logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, (SimulatorException, asyncio.CancelledError, ClientDisconnect))


_LOG_FILTER = _DeliberateErrors()
logging.getLogger("uvicorn.error").addFilter(_LOG_FILTER)


class _H11Protocol(H11Protocol):
    """uvicorn's h11 protocol, but the whole body of a request whose client hung up before it was handled is kept.

    uvicorn drops such a request's body (the handler's read says "disconnected"); the real server may still handle
    a POST whose client gave up during a stall, and the simulator takes that harsh side every time (see
    app._left_behind). Nothing else differs: 100 Continue, keep-alive and the hang-up after an exception's 500
    are uvicorn's own.
    """

    def connection_lost(self, exc: Exception | None) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not cycle.more_body:
            cycle.scope[ORPHAN_BODY] = bytes(cycle.body)  # type: ignore[literal-required]
        super().connection_lost(exc)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one); SimulatorError (one line) if the address is unusable."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it Nagle holds
    # back the body that uvicorn writes after the head until the client's delayed ACK (40 ms an answer).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortTaken(host, port) from None
        raise SimulatorError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


class _Serving:
    """One uvicorn.Server on a socket, run by a thread's own event loop until stop()."""

    def __init__(self, app: Any, sock: socket.socket, idle_timeout: float) -> None:
        self.sock = sock
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            app, http=_H11Protocol, lifespan="off", timeout_keep_alive=idle_timeout, access_log=False, log_config=None,
            backlog=1024,
        )
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="animals-simulator", daemon=True)
        self.task: asyncio.Task[None]

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(self.server.serve(sockets=[self.sock]))
        self.loop.call_soon(self._check_started)
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass  # stop(): uvicorn's own shutdown would wait out its 0.1 s tick and every stalled request
        finally:
            self._cancel_the_rest()
            self.loop.close()

    def _check_started(self) -> None:
        if self.server.started or self.task.done():
            self.ready.set()
        else:
            self.loop.call_later(0.002, self._check_started)

    def _halt(self) -> None:
        """In the loop: stop listening, hang up on every connection, end uvicorn; stalled requests are never handled."""
        for listener in self.server.servers:
            listener.close()
        for connection in list(self.server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        self.task.cancel()

    def _cancel_the_rest(self) -> None:
        pending = [task for task in asyncio.all_tasks(self.loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())

    def start(self) -> None:
        self.thread.start()
        self.ready.wait()
        if self.task.done():  # uvicorn gave up at start-up (it logs why)
            self.thread.join()
            self.sock.close()
            raise SimulatorError(f"the simulator could not start on port {self.port}")

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._halt)
        self.thread.join()
        self.sock.close()


class Simulator:
    """Runs the API in background threads; a context manager (start on enter, stop on exit)."""

    def __init__(self, config: SimulatorConfig) -> None:
        if not 0 <= config.chaos <= 100:
            raise SimulatorError(f"chaos must be a percentage 0..100, got {config.chaos}")
        if not 0 <= config.stall_min <= config.stall_max:
            raise SimulatorError(f"stalls need 0 <= stall_min <= stall_max, got {config.stall_min}..{config.stall_max}")
        if config.animals is not None:
            check_animal_count(config.animals)
        if config.idle_timeout <= 0:
            raise SimulatorError(f"idle_timeout must be positive, got {config.idle_timeout}")
        self.config = config
        self._api = _AnimalsApi(config)
        self._app = build_app(self._api)
        self._serving: _Serving | None = None

    @property
    def total_animals(self) -> int:
        return self._api.total

    @property
    def total_pages(self) -> int:
        return self._api.total_pages

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:3123 (the real port once started with port 0)."""
        host, port = self.config.host, self.config.port
        if self._serving is not None:
            port = self._serving.port
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def stalled_requests(self) -> int:
        """How many requests a chaos stall holds right now: asleep, or woken and not answered yet (0: all handled)."""
        return self._api.stalled

    def start(self) -> Simulator:
        """Bind and serve in a daemon thread; SimulatorError (one line) if the address is unusable."""
        if self._serving is not None:
            return self
        self._serving = _Serving(self._app, _listen(self.config.host, self.config.port), self.config.idle_timeout)
        self._serving.start()
        return self

    def stop(self) -> None:
        """Stop serving, cancel any stalled request (it is never handled), close the socket and every connection;
        idempotent."""
        serving, self._serving = self._serving, None
        if serving is not None:
            serving.stop()

    def verify(self) -> dict[str, Any]:
        """The same document as GET /_verify."""
        return self._api.ledger.report()

    def reset_verification(self) -> None:
        """Forget all deliveries, so one simulator can serve several test cases."""
        self._api.ledger.reset()

    def queue_chaos(self, *outcomes: Chaos, method: str | None = None) -> None:
        """Force the fates of the next chaos-eligible requests (in arrival order), whatever the chaos rate.

        With `method="POST"` only POSTs draw from this queue: a test can stall exactly the next batch.
        """
        self._api.force(outcomes, method)

    def drop_queued_chaos(self) -> int:
        """Forget the forced fates no request has drawn yet (of every method); how many were dropped.

        A harness that queues stalls to pause a client it then kills drops the rest, so they do not fall on the
        next client instead: a real server's chaos is 1 in 100, never a queue of stalls waiting for a resume.
        """
        return self._api.unforce()

    def expected_record(self, animal_id: int) -> dict[str, Any]:
        """What a correct client posts for this id in this run (faults included)."""
        return self._api.expected(animal_id)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
