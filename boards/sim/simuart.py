# The simulator's UART stand-in (loaded only for transport "serial"): listens on
# 127.0.0.1:<port> and talks to one client at a time (pyserial's socket://127.0.0.1:<port>
# on the gateway side). Non-blocking like a UART with timeout=0: readinto returns None when
# nothing is there; bytes written with no client connected go nowhere, like an unplugged cable.
import socket


class TcpUart:
    def __init__(self, port):
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        self.srv.listen(1)
        self.srv.setblocking(False)
        self.conn = None

    def _client(self):
        if self.conn is None:
            try:
                self.conn = self.srv.accept()[0]
                self.conn.setblocking(False)
            except OSError:
                return None
        return self.conn

    def _drop(self):
        try:
            self.conn.close()
        except OSError:
            pass
        self.conn = None

    def readinto(self, buf):
        c = self._client()
        if c is None:
            return None
        try:
            n = c.readinto(buf) if hasattr(c, "readinto") else c.recv_into(buf)
        except OSError:
            n = None
        if n == 0:
            self._drop()
            return None
        return n

    def write(self, buf):
        c = self._client()
        if c is None:
            return len(buf)
        try:
            return c.write(buf) if hasattr(c, "write") else c.send(buf)
        except OSError as exc:
            if exc.args and exc.args[0] == 11:  # EAGAIN: the peer is slow; try again
                return None
            self._drop()
            return len(buf)
