"""Reading a ``multipart/related`` request body part by part (RFC 2046 5.1, RFC 2387).

STOW-RS bodies can hold a whole study. :func:`iter_parts` reads the stream in chunks and
yields each part as soon as its closing delimiter has arrived, so memory holds one part (one
instance) at a time, never the body.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

#: Bytes read from the stream at a time.
CHUNK = 1 << 20
#: Longest header block of one part.
MAX_HEADERS = 16 * 1024


class MultipartError(ValueError):
    """The body is not the multipart/related its Content-Type announced; says why."""


def iter_parts(read: Callable[[int], bytes], boundary: str) -> Iterator[tuple[dict[str, str],
                                                                            bytes]]:
    """Yield ``(headers, body)`` for each part of a multipart body.

    Parameters
    ----------
    read
        Reads up to n bytes of the body; returns b"" at its end.
    boundary
        The boundary from the Content-Type header.

    Yields
    ------
    tuple
        The part's headers (lower-case names) and its body.

    Raises
    ------
    MultipartError
        If the boundary never appears, a part is cut off, or its headers are malformed.
    """
    buffer = bytearray()

    def fill() -> bool:
        chunk = read(CHUNK)
        buffer.extend(chunk)
        return bool(chunk)

    opening = b"--" + boundary.encode("ascii")
    while (index := buffer.find(opening)) < 0:  # skip the preamble
        del buffer[: max(0, len(buffer) - len(opening))]
        if not fill():
            raise MultipartError("the body holds no part: its boundary never appears")
    del buffer[: index + len(opening)]
    delimiter = b"\r\n" + opening
    while True:
        while len(buffer) < 2 and fill():
            pass
        if buffer[:2] == b"--":
            return  # the close delimiter
        while (line_end := buffer.find(b"\r\n")) < 0:
            if len(buffer) > MAX_HEADERS or not fill():
                raise MultipartError("a boundary line is not followed by a line break")
        del buffer[: line_end + 2]
        headers = _headers(buffer, fill)
        body = bytearray()
        keep = len(delimiter) - 1
        while (index := buffer.find(delimiter)) < 0:
            if len(buffer) > keep:  # what cannot be the start of the delimiter is body
                body += buffer[:-keep]
                del buffer[:-keep]
            if not fill():
                raise MultipartError("a part is cut off: its closing boundary never comes")
        body += buffer[:index]
        del buffer[: index + len(delimiter)]
        yield headers, bytes(body)


def _headers(buffer: bytearray, fill: Callable[[], bool]) -> dict[str, str]:
    """Read (and remove from ``buffer``) one part's header block."""
    while len(buffer) < 2 and fill():
        pass
    if buffer[:2] == b"\r\n":
        del buffer[:2]
        return {}
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        if len(buffer) > MAX_HEADERS or not fill():
            raise MultipartError("a part's headers do not end (or exceed 16 KiB)")
    block = bytes(buffer[:end]).decode("latin-1")
    del buffer[: end + 4]
    headers = {}
    for line in block.split("\r\n"):
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise MultipartError(f"malformed part header line {line[:60]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers
