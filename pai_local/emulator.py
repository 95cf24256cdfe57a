"""The embedded AWS emulator: moto's server mode, in this process, on a loopback port."""

from __future__ import annotations

import os
import socket
import urllib.request
from contextlib import closing

EMULATOR_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
DEFAULT_EMULATOR_PORT = 4566  # the port LocalStack uses, so tools pointed at one find the other


def use_emulator_credentials() -> None:
    """Emulators take any key; 'test'/'test' keeps real credentials out of local traffic."""
    for name, value in EMULATOR_CREDENTIALS.items():
        os.environ[name] = value
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def endpoint_answers(endpoint_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(endpoint_url, timeout=timeout):  # noqa: S310 (our own loopback URL)
            return True
    except OSError as exc:
        # Any HTTP answer, even an error status, means something is listening.
        return hasattr(exc, "code")


class EmbeddedMoto:
    def __init__(self, *, port: int = DEFAULT_EMULATOR_PORT, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self._server: object | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        from moto.server import ThreadedMotoServer

        if port_in_use(self.port, self.host):
            raise RuntimeError(
                f"port {self.port} is taken: stop what listens there, or set AWS_ENDPOINT_URL to use it as the emulator"
            )
        server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        server.start()
        self._server = server
        return self.endpoint_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None
