"""The server's connections: uvicorn's HTTP/1.1 protocol with a deadline for each request's headers.

Why: uvicorn closes an idle keep-alive connection (5 s) but waits forever for a request's headers, so a
client that opens connections and sends a partial header, or trickles one byte every few seconds
(slowloris), held them all: with 400 such connections a good client timed out, and accept() flooded
the log with "Too many open files". A connection whose headers are not complete within
--header-timeout seconds of its opening (or of its previous answer) is closed, as nginx's
client_header_timeout does; a request whose headers arrived is never cut off here. Its body has no
deadline of its own (--max-body bounds its size, not its time: a body sent a byte at a time holds its
connection until it ends, and such clients count against --max-connections): a server on the open
internet belongs behind a reverse proxy that times request bodies too. uvicorn has no such option, so this subclasses its h11 protocol; where that
class is not found, uvicorn's own protocol serves, without the deadline.
"""

from __future__ import annotations


def header_deadline_protocol(header_timeout: float):
    """uvicorn's h11 protocol class with the header deadline, or "h11" where it cannot be made."""
    try:
        from uvicorn.protocols.http.h11_impl import H11Protocol
    except ImportError:  # (a uvicorn that moved it: its own protocol, without the deadline)
        return "h11"

    class HeaderDeadline(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # the next request's headers get the same time

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._header_deadline = self.loop.call_later(header_timeout, self._headers_late)

        def _disarm(self) -> None:
            deadline = getattr(self, "_header_deadline", None)
            if deadline is not None:
                deadline.cancel()

        def _headers_late(self) -> None:
            cycle = getattr(self, "cycle", None)
            between_requests = cycle is None or cycle.response_complete
            if between_requests and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadline


def uvicorn_config(app, host: str, port: int, limits, **kw):
    """The uvicorn.Config every finsent server runs with (`finsent serve` and the tests' servers): the
    header deadline, and at most --max-connections open connections before new requests get 503."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=header_deadline_protocol(limits.header_timeout),
        limit_concurrency=limits.max_connections,
        **kw,
    )
