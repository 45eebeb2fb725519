"""Dynamic VHD: a strictly forward-only stream reader (for import_raw_vdi) and a
writer (for export_raw_vdi?format=vhd), following the VHD specification as
xapi's vhd-tool applies it.

The reader never seeks backwards, like xapi's streaming importer: footer
copy, header, BAT, then the blocks in increasing file offset, then the
trailing footer at (Content-Length - 1) & ~511.  Only sectors whose bit is set
in a block's sector bitmap are written (runs of set bits are coalesced).
"""

import os
import struct
import time
import uuid as uuidlib

SECTOR = 512
FOOTER_COOKIE = b"conectix"
HEADER_COOKIE = b"cxsparse"
VERSION = 0x00010000
NO_OFFSET = 0xFFFFFFFFFFFFFFFF
BAT_UNUSED = 0xFFFFFFFF
DISK_FIXED, DISK_DYNAMIC, DISK_DIFFERENCING = 2, 3, 4
VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z in Unix time


class VhdError(Exception):
    pass


def checksum(buf, field_offset):
    """One's complement of the byte sum, with the checksum field counted as 0."""
    total = sum(buf[:field_offset]) + sum(buf[field_offset + 4:])
    return (~total) & 0xFFFFFFFF


class ForwardReader:
    """Reads exactly what is asked from a stream of known length, never backwards.

    `readinto` is a file-like readinto function: a block lands in one buffer
    (the body of a restore is gigabytes, and joining pieces and copying them
    was most of the importer's time)."""

    def __init__(self, readinto, length):
        self._readinto = readinto
        self.length = length
        self.pos = 0

    def read(self, n):
        if self.pos + n > self.length:
            raise VhdError("stream ends at %d, need %d bytes at %d" % (self.length, n, self.pos))
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self._readinto(view[got:])
            if not k:
                raise VhdError("short body: connection closed at byte %d of %d"
                               % (self.pos + got, self.length))
            got += k
        self.pos += n
        return buf

    def skip_to(self, offset, what):
        if offset < self.pos:
            raise VhdError("%s at %d lies behind the stream position %d (not forward-only)"
                           % (what, offset, self.pos))
        while self.pos < offset:
            self.read(min(offset - self.pos, 1 << 20))


def parse_footer(buf):
    if buf[:8] != FOOTER_COOKIE:
        raise VhdError("bad footer cookie %r" % buf[:8])
    (stored,) = struct.unpack_from(">I", buf, 64)
    if stored != checksum(buf, 64):
        raise VhdError("footer checksum mismatch")
    (version,) = struct.unpack_from(">I", buf, 12)
    if version != VERSION:
        raise VhdError("unsupported footer version 0x%08x" % version)
    (data_offset,) = struct.unpack_from(">Q", buf, 16)
    (current_size,) = struct.unpack_from(">Q", buf, 48)
    (disk_type,) = struct.unpack_from(">I", buf, 60)
    return {"data_offset": data_offset, "current_size": current_size, "disk_type": disk_type}


def parse_header(buf):
    if buf[:8] != HEADER_COOKIE:
        raise VhdError("bad dynamic header cookie %r" % buf[:8])
    (stored,) = struct.unpack_from(">I", buf, 36)
    if stored != checksum(buf, 36):
        raise VhdError("dynamic header checksum mismatch")
    data_offset, table_offset, version, entries, block_size = struct.unpack_from(">QQIII", buf, 8)
    if data_offset != NO_OFFSET:
        raise VhdError("dynamic header data offset is not 0xFFFFFFFFFFFFFFFF")
    if version != VERSION:
        raise VhdError("unsupported dynamic header version 0x%08x" % version)
    if block_size < SECTOR or block_size & (block_size - 1):
        raise VhdError("block size %d is not a power of two" % block_size)
    return {"table_offset": table_offset, "max_table_entries": entries, "block_size": block_size}


def set_runs(bitmap, nsect):
    """Yields (first, end) for every run of sectors whose bit is set among the
    first `nsect` bits of a sector bitmap (MSB first).  Whole bytes of 0x00 or
    0xFF are taken at once: a bit-by-bit scan of every 2 MiB block cost more
    than the upload itself."""
    nbytes = (nsect + 7) // 8
    if nsect % 8 == 0 and bitmap[:nbytes] == b"\xff" * nbytes:
        yield 0, nsect
        return
    start = None
    for i in range(nbytes):
        b = bitmap[i]
        if (b == 0xFF and start is not None) or (b == 0 and start is None):
            continue
        for bit in range(8):
            j = i * 8 + bit
            if j >= nsect:
                break
            if b & (0x80 >> bit):
                if start is None:
                    start = j
            elif start is not None:
                yield start, j
                start = None
    if start is not None:
        yield start, nsect


def apply_stream(readinto, length, write):
    """Parse a dynamic/differencing VHD from `readinto` (a file-like readinto
    function; `length` = Content-Length) and call write(offset, data) for
    every run of present sectors.  Raises VhdError on any malformation or
    short body."""
    r = ForwardReader(readinto, length)
    footer = parse_footer(r.read(SECTOR))
    if footer["disk_type"] not in (DISK_DYNAMIC, DISK_DIFFERENCING):
        raise VhdError("disk type %d is not dynamic or differencing" % footer["disk_type"])
    r.skip_to(footer["data_offset"], "dynamic header")
    header = parse_header(r.read(1024))
    r.skip_to(header["table_offset"], "BAT")
    entries = header["max_table_entries"]
    bat = struct.unpack(">%dI" % entries, r.read(4 * entries))
    block_size = header["block_size"]
    sectors_per_block = block_size // SECTOR
    bitmap_size = ((sectors_per_block + 7) // 8 + SECTOR - 1) // SECTOR * SECTOR
    blocks = sorted((sector, i) for i, sector in enumerate(bat) if sector != BAT_UNUSED)
    written = 0
    for sector, index in blocks:
        r.skip_to(sector * SECTOR, "block %d" % index)
        bitmap = r.read(bitmap_size)
        data = r.read(block_size)
        base = index * block_size
        view = memoryview(data)
        for j, k in set_runs(bitmap, sectors_per_block):
            write(base + j * SECTOR, view[j * SECTOR:k * SECTOR])
            written += (k - j) * SECTOR
    # The trailing footer sits in the last sector of the stream.
    r.skip_to((length - 1) & ~(SECTOR - 1), "trailing footer")
    tail = r.read(SECTOR)
    if tail[:8] != FOOTER_COOKIE:
        raise VhdError("no footer at the end of the stream")
    return {"current_size": footer["current_size"], "blocks": len(blocks), "bytes": written}


# ---- writer ----------------------------------------------------------------------------

def geometry(size):
    """CHS for the footer, as xapi computes it (strict '>' in the first test)."""
    total = min(size // SECTOR, 65535 * 16 * 255)
    if total > 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


def make_footer(size, creator=b"caml", timestamp=0, disk_type=DISK_DYNAMIC):
    cyl, heads, spt = geometry(size)
    buf = bytearray(SECTOR)
    struct.pack_into(">8sIIQI4sII", buf, 0, FOOTER_COOKIE, 2, VERSION, SECTOR, timestamp,
                     creator, 0x00010000, 0)
    struct.pack_into(">QQHBBI", buf, 40, size, size, cyl, heads, spt, disk_type)
    buf[68:84] = uuidlib.uuid4().bytes
    struct.pack_into(">I", buf, 64, checksum(buf, 64))
    return bytes(buf)


def make_header(table_offset, entries, block_size):
    buf = bytearray(1024)
    struct.pack_into(">8sQQIII", buf, 0, HEADER_COOKIE, NO_OFFSET, table_offset, VERSION,
                     entries, block_size)
    struct.pack_into(">I", buf, 36, checksum(buf, 36))
    return bytes(buf)


def data_ranges(path):
    """(start, end) ranges holding data, from SEEK_DATA/SEEK_HOLE."""
    ranges = []
    fd = os.open(path, os.O_RDONLY)
    try:
        end = os.fstat(fd).st_size
        pos = 0
        while pos < end:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            stop = os.lseek(fd, start, os.SEEK_HOLE)
            ranges.append((start, stop))
            pos = stop
    finally:
        os.close(fd)
    return ranges


def export_stream(path, size, block_size=2 * 1024 * 1024):
    """Yield a dynamic VHD of the file, with only allocated blocks, laid out as
    xapi does: footer copy, header at 512, an empty sector, BAT at 2048, blocks
    with every bitmap bit set (inside the disk), footer."""
    entries = (size + block_size - 1) // block_size
    present = set()
    for start, stop in data_ranges(path):
        stop = min(stop, size)
        if start < stop:
            present.update(range(start // block_size, (stop - 1) // block_size + 1))
    present = sorted(present)
    table_offset = 2048
    bat_bytes = (entries * 4 + SECTOR - 1) // SECTOR * SECTOR
    bitmap_size = ((block_size // SECTOR + 7) // 8 + SECTOR - 1) // SECTOR * SECTOR
    bat = [BAT_UNUSED] * entries
    pos = table_offset + bat_bytes
    for i in present:
        bat[i] = pos // SECTOR
        pos += bitmap_size + block_size
    footer = make_footer(size)
    yield footer
    yield make_header(table_offset, entries, block_size)
    yield bytes(SECTOR)
    batbuf = bytearray(b"\xff" * bat_bytes)
    struct.pack_into(">%dI" % entries, batbuf, 0, *bat)
    yield bytes(batbuf)
    with open(path, "rb") as f:
        for i in present:
            base = i * block_size
            valid = min(block_size, size - base) // SECTOR  # sectors inside the disk
            bitmap = bytearray(bitmap_size)
            bitmap[:valid // 8] = b"\xff" * (valid // 8)
            if valid % 8:
                bitmap[valid // 8] = (0xFF << (8 - valid % 8)) & 0xFF
            yield bytes(bitmap)
            f.seek(base)
            data = f.read(min(block_size, size - base))
            yield data + bytes(block_size - len(data))
    yield footer


def now_timestamp():
    return int(time.time()) - VHD_EPOCH
