"""A minimal NBD client (fixed newstyle, STARTTLS, NBD_OPT_EXPORT_NAME, simple
replies), written against the protocol description only, for the self-test.

It connects the way a client of xapi-nbd must: TLS first, then EXPORT_NAME
(the only option xapi-nbd accepts), and checks the 124 zero bytes that follow
because NO_ZEROES is not offered.
"""

import socket
import ssl
import struct

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = b"IHAVEOPT"
OPT_REPLY_MAGIC = 0x0003E889045565A9
REQUEST_MAGIC = 0x25609513
REPLY_MAGIC = 0x67446698
OPT_EXPORT_NAME, OPT_STARTTLS = 1, 5
CMD_READ, CMD_WRITE, CMD_DISC = 0, 1, 2
FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES = 1, 2


class NbdError(Exception):
    pass


class NbdClient:
    def __init__(self, address, port, exportname, cafile=None, server_name=None, timeout=20):
        self.sock = socket.create_connection((address, int(port)), timeout=timeout)
        self.handle = 0
        if self._recv(8) != NBDMAGIC or self._recv(8) != IHAVEOPT:
            raise NbdError("not a fixed-newstyle NBD server")
        (self.server_flags,) = struct.unpack(">H", self._recv(2))
        self.sock.sendall(struct.pack(">I", FLAG_FIXED_NEWSTYLE))
        if cafile:
            self._option(OPT_STARTTLS, b"")
            rtype, _ = self._option_reply(OPT_STARTTLS)
            if rtype != 1:
                raise NbdError("STARTTLS refused (reply type 0x%x)" % rtype)
            ctx = ssl.create_default_context(cafile=cafile)
            self.sock = ctx.wrap_socket(self.sock, server_hostname=server_name or address)
        name = exportname.encode()
        self._option(OPT_EXPORT_NAME, name)
        try:
            head = self._recv(10)
        except NbdError:
            raise NbdError("server closed the connection after EXPORT_NAME (export refused)")
        self.size, self.flags = struct.unpack(">QH", head)
        if not self.server_flags & FLAG_NO_ZEROES:
            self.zeroes = self._recv(124)
            if self.zeroes != bytes(124):
                raise NbdError("the 124 padding bytes are not zero")

    def _recv(self, n):
        parts = []
        while n > 0:
            chunk = self.sock.recv(min(n, 1 << 20))
            if not chunk:
                raise NbdError("connection closed by the server")
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)

    def _option(self, opt, data):
        self.sock.sendall(IHAVEOPT + struct.pack(">II", opt, len(data)) + data)

    def _option_reply(self, opt):
        magic, ropt, rtype, length = struct.unpack(">QIII", self._recv(20))
        if magic != OPT_REPLY_MAGIC or ropt != opt:
            raise NbdError("bad option reply")
        return rtype, self._recv(length)

    def _request(self, cmd, offset, length, payload=b""):
        self.handle += 1
        self.sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, cmd, self.handle, offset,
                                      length) + payload)
        magic, error, handle = struct.unpack(">IIQ", self._recv(16))
        if magic != REPLY_MAGIC or handle != self.handle:
            raise NbdError("bad reply (structured replies are not expected)")
        return error

    def pread(self, offset, length):
        """Returns the data; raises NbdError with .errno set on an error reply."""
        error = self._request(CMD_READ, offset, length)
        if error:
            e = NbdError("read at %d+%d failed with error %d" % (offset, length, error))
            e.errno = error
            raise e
        return self._recv(length)

    def pwrite(self, offset, data):
        return self._request(CMD_WRITE, offset, len(data), data)

    def close(self):
        try:
            self.sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_DISC, 0, 0, 0))
        except OSError:
            pass
        self.sock.close()
