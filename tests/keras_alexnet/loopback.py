"""A real HTTP server on 127.0.0.1, in a thread, serving bytes the test gives it: the
only network the weight downloads in the tests ever reach."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer:
    """`files` ({"/path": bytes}) over HTTP.  `cut_after`: each body stops after that
    many bytes (its Content-Length still whole) and the connection closes, as a
    transfer interrupted by the network does.  `requests` lists the paths asked for."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.cut_after: int | None = None
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if server.cut_after is None
                                 else body[:server.cut_after])
                self.close_connection = True

            def log_message(self, *args) -> None:  # keep the test output clean
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_port}{path}"

    def stop(self) -> None:
        """Shut down and close the port: connections to it are refused from now on."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
