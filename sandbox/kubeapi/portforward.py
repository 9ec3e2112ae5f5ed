"""`pods/<pod>/portforward`: `kubectl port-forward` to a pod (and so to a service), over SPDY/3.1.

What kubectl speaks (k8s.io/client-go tools/portforward, k8s.io/apimachinery util/httpstream/spdy,
the kubelet's pkg/kubelet/cri/streaming/portforward/httpstream.go):

- the request upgrades the HTTPS connection: `Upgrade: SPDY/3.1`, `X-Stream-Protocol-Version:
  portforward.k8s.io`; the answer is `101 Switching Protocols` naming the same protocol.
- per local connection kubectl opens two streams (SYN_STREAM) with headers `streamtype` (`error`,
  then `data`), `port` and `requestid`; the server answers each with a SYN_REPLY. Bytes of the data
  stream go to the pod's port and back; the error stream carries a message if the port cannot be
  reached, and is closed (FIN) when forwarding ends.
- SPDY/3 framing (draft-mbelshe-httpbis-spdy-00): 8-byte frame headers, header blocks zlib-compressed
  with the protocol's fixed dictionary, one compression context per direction and connection.

kubectl 1.31+ first tries the same streams tunnelled in a websocket (`SPDY/3.1+portforward.k8s.io`)
and falls back to plain SPDY when the websocket upgrade is refused, which the sandbox does.
"""

from __future__ import annotations

import socket
import struct
import threading
import zlib
from typing import Callable

PROTOCOL = "portforward.k8s.io"
UPGRADE = "SPDY/3.1"
VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
RST_CANCEL = 5
_CONNECT_TIMEOUT_SECONDS = 10

# The SPDY/3 header compression dictionary (spec section 2.6.10.1): length-prefixed words, then literal text.
_WORDS = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding",
    "accept-language", "accept-ranges", "age", "allow", "authorization", "cache-control", "connection",
    "content-base", "content-encoding", "content-language", "content-length", "content-location", "content-md5",
    "content-range", "content-type", "date", "etag", "expect", "expires", "from", "host", "if-match",
    "if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
    "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer", "retry-after",
    "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
    "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie",
    "keep-alive", "origin")
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.")


def _dictionary() -> bytes:
    return b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()


DICTIONARY = _dictionary()


def header_block(headers: dict[str, str]) -> bytes:
    out = struct.pack(">I", len(headers))
    for name, value in headers.items():
        out += struct.pack(">I", len(name)) + name.lower().encode() + struct.pack(">I", len(value)) + value.encode()
    return out


def parse_header_block(data: bytes) -> dict[str, str]:
    (count,), offset, headers = struct.unpack_from(">I", data), 4, {}
    for _ in range(count):
        (n,) = struct.unpack_from(">I", data, offset)
        name = data[offset + 4:offset + 4 + n].decode()
        offset += 4 + n
        (n,) = struct.unpack_from(">I", data, offset)
        headers[name] = data[offset + 4:offset + 4 + n].decode()
        offset += 4 + n
    return headers


class SpdyConnection:
    """The server side of one upgraded connection: reads frames, answers streams, forwards bytes."""

    def __init__(self, read: Callable[[int], bytes], write: Callable[[bytes], None],
                 dial: Callable[[int], socket.socket], describe: str):
        self._read, self._write_raw = read, write
        self._dial, self._describe = dial, describe
        self._lock = threading.Lock()
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY,
                                         zdict=DICTIONARY)
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._pending: dict[str, dict[str, int]] = {}  # requestid -> streamtype -> stream id
        self._backends: dict[int, socket.socket] = {}  # data stream id -> connection to the pod's port
        self._closed: set[int] = set()

    # -- writing -----------------------------------------------------------------------------

    def _send(self, frame: bytes) -> None:
        with self._lock:
            self._write_raw(frame)

    def _control(self, type_: int, flags: int, payload: bytes) -> None:
        self._send(struct.pack(">HHI", 0x8000 | VERSION, type_, (flags << 24) | len(payload)) + payload)

    def data(self, stream_id: int, payload: bytes, fin: bool = False) -> None:
        if stream_id in self._closed:
            return
        if fin:
            self._closed.add(stream_id)
        for start in range(0, max(len(payload), 1), 0xFFFFFF):
            chunk = payload[start:start + 0xFFFFFF]
            last = start + 0xFFFFFF >= len(payload)
            flags = FLAG_FIN if (fin and last) else 0
            self._send(struct.pack(">II", stream_id & 0x7FFFFFFF, (flags << 24) | len(chunk)) + chunk)

    def _reply(self, stream_id: int) -> None:
        with self._lock:  # the compression context is shared: compress and send in one go
            block = self._deflate.compress(header_block({})) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
            payload = struct.pack(">I", stream_id) + block
            self._write_raw(struct.pack(">HHI", 0x8000 | VERSION, SYN_REPLY, len(payload)) + payload)

    # -- reading -----------------------------------------------------------------------------

    def _exactly(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = self._read(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def serve(self) -> None:
        """Until the client goes away (EOF, GOAWAY) or the socket fails."""
        try:
            while True:
                head = self._exactly(8)
                if head is None:
                    return
                first, second = struct.unpack(">II", head)
                flags, length = second >> 24, second & 0xFFFFFF
                payload = self._exactly(length) if length else b""
                if payload is None:
                    return
                if first & 0x80000000:
                    if not self._on_control((first >> 16) & 0x7FFF, first & 0xFFFF, flags, payload):
                        return
                else:
                    self._on_data(first & 0x7FFFFFFF, flags, payload)
        except OSError:
            return
        finally:
            for backend in list(self._backends.values()):
                backend.close()

    def _on_control(self, version: int, type_: int, flags: int, payload: bytes) -> bool:
        if type_ == SYN_STREAM:
            stream_id = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
            headers = parse_header_block(self._inflate.decompress(payload[10:]))
            self._reply(stream_id)
            if flags & FLAG_FIN:
                self._closed.discard(stream_id)
            self._on_stream(stream_id, headers)
        elif type_ == PING:
            self._control(PING, 0, payload)
        elif type_ == RST_STREAM:
            backend = self._backends.pop(struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF, None)
            if backend is not None:
                backend.close()
        elif type_ == GOAWAY:
            return False
        elif type_ == HEADERS:
            self._inflate.decompress(payload[4:])  # keeps the shared context in step; nothing to act on
        return True  # SETTINGS, WINDOW_UPDATE: nothing the sandbox needs to act on

    def _on_stream(self, stream_id: int, headers: dict[str, str]) -> None:
        pair = self._pending.setdefault(headers.get("requestid", ""), {})
        pair[headers.get("streamtype", "")] = stream_id
        if "error" not in pair or "data" not in pair:
            return
        del self._pending[headers.get("requestid", "")]
        port_text = headers.get("port", "")
        if not port_text.isdigit():
            self.data(pair["error"], f"invalid port {port_text!r} in the port header".encode(), fin=True)
            self.data(pair["data"], b"", fin=True)
            return
        port = int(port_text)
        try:
            backend = self._dial(port)
        except OSError as err:
            message = f"error forwarding port {port} to pod {self._describe}: dial tcp4 127.0.0.1:{port}: {err}"
            self.data(pair["error"], message.encode(), fin=True)
            self.data(pair["data"], b"", fin=True)
            return
        self._backends[pair["data"]] = backend
        threading.Thread(target=self._pump, args=(backend, pair["data"], pair["error"]), daemon=True,
                         name=f"portforward-{port}").start()

    def _pump(self, backend: socket.socket, data_id: int, error_id: int) -> None:
        """The pod's answers back to kubectl; FIN on both streams when the pod's side is done."""
        try:
            while True:
                chunk = backend.recv(65536)
                if not chunk:
                    break
                self.data(data_id, chunk)
        except OSError:
            pass
        try:
            self.data(data_id, b"", fin=True)
            self.data(error_id, b"", fin=True)
        except OSError:
            pass
        self._backends.pop(data_id, None)
        backend.close()

    def _on_data(self, stream_id: int, flags: int, payload: bytes) -> None:
        backend = self._backends.get(stream_id)
        if backend is None:
            return  # the error stream's FIN, or data after the pod's side closed
        try:
            if payload:
                backend.sendall(payload)
            if flags & FLAG_FIN:
                backend.shutdown(socket.SHUT_WR)
        except OSError:
            self._control(RST_STREAM, 0, struct.pack(">II", stream_id, RST_CANCEL))


def dialer(host: str, port_of: Callable[[int], int]) -> Callable[[int], socket.socket]:
    """Connect to the pod's port `port` (mapped by `port_of` to where the sandbox runs it)."""
    def dial(port: int) -> socket.socket:
        connection = socket.create_connection((host, port_of(port)), timeout=_CONNECT_TIMEOUT_SECONDS)
        connection.settimeout(None)  # a forwarded connection may idle as long as the client likes
        return connection
    return dial
