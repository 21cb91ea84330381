"""The simulator as its own process: `serve` in the child, `SimulatorProcess` in the parent, and the port between them."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import urllib.request
from typing import Any

from ..errors import SimulatorError
from .app import SimulatorConfig
from .server import Simulator

__all__ = ["START_SECONDS", "SimulatorProcess", "serve"]

START_SECONDS = 15  # how long a parent waits for its child to listen


def serve(config: SimulatorConfig, *, url_fd: int | None = None) -> None:
    """Serve in the foreground until Ctrl-C, for the CLI; a busy port raises SimulatorError.

    With `url_fd` (a pipe from the parent), the base URL is written there once listening and the pipe closed:
    the parent learns the port without reading the banner, which is for people.
    """
    with Simulator(config) as simulator:
        try:  # the banner inside: a Ctrl-C right after it (a script that waits for it) is still a clean stop
            if url_fd is not None:
                with open(url_fd, "w", encoding="ascii") as pipe:
                    pipe.write(simulator.url + "\n")
            print(
                f"Animals API simulator on {simulator.url}: {simulator.total_animals} animals, "
                f"chaos {config.chaos:g}%, strict {'on' if config.strict else 'off'}",
                flush=True,
            )
            # Not one unbounded wait: a Ctrl-C the kernel hands to another thread (the server's) only sets Python's
            # flag, and a main thread blocked for ever never looks at it. A bounded wait does, when it returns.
            while not threading.Event().wait(0.2):
                pass
        except KeyboardInterrupt:
            pass


class SimulatorProcess:
    """`animal-sync simulate` in a child process on a free loopback port; a context manager.

    The child binds port 0 and writes its URL to a pipe this process hands it (`--url-fd`), so no other process
    can take the port between choosing and binding it, and nothing parses the banner.
    """

    def __init__(self, *args: str) -> None:
        self.args = ["--port", "0", *args]
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SimulatorProcess:
        read_fd, write_fd = os.pipe()
        command = [sys.executable, "-m", "animal_sync", "simulate", "--url-fd", str(write_fd), *self.args]
        try:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)  # the child holds the only writer now: its exit ends the pipe
        with open(read_fd, "rb") as pipe:
            ready, _, _ = select.select([pipe], [], [], START_SECONDS)
            line = pipe.readline().decode("ascii", "replace").strip() if ready else ""
        if line:
            self.url = line
            return self
        if ready:  # the pipe closed unwritten: the child is on its way out, so let its exit code arrive
            try:
                self.process.wait(START_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        self.__exit__()
        if ready:
            raise SimulatorError(f"the simulator exited at start with code {self.process.returncode}")
        raise SimulatorError(f"the simulator did not answer within {START_SECONDS} s")

    def verify(self) -> dict[str, Any]:
        """The child's GET /_verify document."""
        with urllib.request.urlopen(self.url + "/_verify", timeout=10) as answer:
            return json.load(answer)

    def __exit__(self, *exc: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
