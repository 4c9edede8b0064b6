"""``overparam ui``: a live explorer of the run store in the browser.

The runs table (filter, query, sort, pages), one run's page with interactive plots of its arrays, runs side
by side, a metric over a config key with a band over seeds and parallel coordinates, live progress of running
runs, and starting or cancelling runs through the same command line as ``overparam run``. Served by Starlette
on uvicorn from this package alone (templates and scripts included: no page loads anything from elsewhere).

It binds 127.0.0.1 by default. Bound to any other address it requires a token: the one given (``--token`` or
``$OVERPARAM_UI_TOKEN``), or a random one printed in the URL to open.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from pathlib import Path

TOKEN_ENV = "OVERPARAM_UI_TOKEN"


class ServeError(ValueError):
    """A setting the explorer cannot start with: one line."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def access_token(host: str, token: str | None) -> str | None:
    """The token requests must carry: the one given, else a new random one when ``host`` is not loopback."""
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    if token is not None and len(token) < 8:
        raise ServeError("--token must be at least 8 characters long")
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    return token


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port), or ServeError with one line."""
    if not 0 <= port <= 65535:
        raise ServeError(f"--port must be in 0..65535, got {port}")
    try:
        family, _, _, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ServeError(f"--host {host!r} is not an address of this machine: {exc.strerror}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


def url_of(sock: socket.socket, host: str, token: str | None) -> str:
    port = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def serve(root: str | Path, sock: socket.socket, token: str | None, log_level: str = "warning") -> None:
    """Serve the explorer on a bound socket until SIGINT or SIGTERM."""
    import uvicorn

    from overparam.ui.server import create_app

    host = sock.getsockname()[0]
    app = create_app(root, token=token, loopback=is_loopback(host))
    config = uvicorn.Config(app, log_level=log_level, access_log=False, server_header=False, date_header=False)
    uvicorn.Server(config).run(sockets=[sock])
