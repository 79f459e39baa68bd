"""A hostile milter on raw sockets: it negotiates like a real one, then, at the command `at`
(a milter command byte: C connect, H helo, M mail, R rcpt, T data, L header, B body, E end of
message), misbehaves as `mode` says:

  garbage     a packet with an unknown reply code
  huge        a length field of 2 GB
  stall       no answer at all (the MTA's timeout must fire)
  disconnect  closes the connection
  badneg      (at negotiation) asks for actions and steps nobody offered

Everything else gets SMFIR_CONTINUE. `seen` lists the command bytes received, per connection.
Runs in a thread of the test process."""

from __future__ import annotations

import socket
import struct
import threading


class HostileMilter:
    def __init__(self, mode: str, at: str = "B", host: str = "127.0.0.1"):
        self.mode, self.at = mode, at.encode()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.spec = f"inet:{host}:{self.port}"
        self.seen: list[list[bytes]] = []
        self.connections = 0
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []

    def start(self) -> "HostileMilter":
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for c in self._conns + [self.sock]:
            try:
                c.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _read_exact(conn: socket.socket, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    @staticmethod
    def _packet(code: bytes, payload: bytes = b"") -> bytes:
        return struct.pack(">I", len(payload) + 1) + code + payload

    def _serve(self, conn: socket.socket) -> None:
        seen: list[bytes] = []
        self.seen.append(seen)
        try:
            while True:
                head = self._read_exact(conn, 4)
                if head is None:
                    return
                (length,) = struct.unpack(">I", head)
                body = self._read_exact(conn, length)
                if body is None:
                    return
                cmd = body[:1]
                seen.append(cmd)
                if cmd == b"O":
                    if self.mode == "badneg":
                        conn.sendall(self._packet(b"O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF)))
                    else:
                        conn.sendall(self._packet(b"O", struct.pack(">III", 6, 0, 0)))
                    continue
                if cmd in (b"D", b"A", b"Q", b"K"):
                    if cmd == b"Q":
                        return
                    continue
                if cmd == self.at:
                    if self.mode == "garbage":
                        conn.sendall(self._packet(b"Z", b"\x00\xff junk"))
                        continue
                    if self.mode == "huge":
                        conn.sendall(struct.pack(">I", 0x80000000) + b"c")
                        continue
                    if self.mode == "stall":
                        continue
                    if self.mode == "disconnect":
                        conn.close()
                        return
                conn.sendall(self._packet(b"c"))
        except OSError:
            return
