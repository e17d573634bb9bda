"""Serve the explore page on localhost with :mod:`http.server` (``crossentropy explore --serve``).

The page needs no server (it is one self-contained file); serving it is a convenience for
opening it in a browser on this machine. The server binds to 127.0.0.1 only, answers ``GET``
and ``HEAD`` for ``/`` and the page's file name with the page, 404 for anything else, and logs
nothing.
"""

from __future__ import annotations

from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["HOST", "PageServer", "make_server"]

#: The only address the server listens on.
HOST = "127.0.0.1"


class PageServer(ThreadingHTTPServer):
    """An HTTP server that answers with one page.

    Args:
        page: the HTML text.
        port: the TCP port, 0 for a free one (then :attr:`server_port` says which).
        name: the page's file name, also served at ``/name``.
    """

    daemon_threads = True

    def __init__(self, page: str, port: int = 0, name: str = "explore.html") -> None:
        self.page = page.encode("utf-8")
        self.paths = {"/", "/index.html", "/" + name}
        super().__init__((HOST, port), _PageHandler)

    @property
    def url(self) -> str:
        """The address to open in a browser."""
        return f"http://{HOST}:{self.server_port}/"


class _PageHandler(BaseHTTPRequestHandler):
    server: PageServer

    def _answer(self, body: bool) -> None:
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        if path not in self.server.paths:
            self.send_error(HTTPStatus.NOT_FOUND, "only the explore page is served here")
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.server.page)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(self.server.page)

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the command prints its own lines."""


def make_server(page: str, *, port: int = 0, name: str = "explore.html") -> PageServer:
    """A :class:`PageServer` bound to 127.0.0.1:``port``, ready to ``serve_forever()``.

    Raises:
        OSError: the port cannot be bound (in use, or privileged).

    Example:
        >>> import threading, urllib.request
        >>> server = make_server("<p>hi</p>")
        >>> thread = threading.Thread(target=server.serve_forever, daemon=True)
        >>> thread.start()
        >>> urllib.request.urlopen(server.url).read()
        b'<p>hi</p>'
        >>> server.shutdown(); server.server_close()
    """
    return PageServer(page, port, name)
