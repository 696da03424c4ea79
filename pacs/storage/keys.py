"""The only place object keys are made.

Keys are content addresses: the SHA-256 of the stored bytes, fanned out over 4,096 folders
named by the first three hex digits: ``instances/abc/abcd…``. One level keeps a fresh
archive from creating (and fsyncing) a new folder for nearly every instance, as a two-level
65,536-folder layout would for its first million instances; at 100 million instances a folder
holds ~25,000 files, which ext4 and XFS index without trouble. Nothing received from
the network ever becomes part of a key; stores refuse keys that do not have this shape, as a
second line of defence against path traversal.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

INSTANCE_PREFIX = "instances/"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_INSTANCE_KEY = re.compile(r"^instances/([0-9a-f]{3})/([0-9a-f]{64})$")
FANOUT_DIGITS = 3


def instance_key(sha256_hex: str) -> str:
    """Return the object key for an instance whose stored bytes hash to ``sha256_hex``.

    Raises
    ------
    ValueError
        If ``sha256_hex`` is not 64 lower-case hexadecimal digits.
    """
    if not _SHA256_HEX.match(sha256_hex):
        raise ValueError("an instance key is made from a SHA-256 hex digest")
    return f"{INSTANCE_PREFIX}{sha256_hex[:FANOUT_DIGITS]}/{sha256_hex}"


def fanout_folders() -> Iterator[str]:
    """The folders instance keys are spread over (``instances/000`` ... ``instances/fff``)."""
    for number in range(16**FANOUT_DIGITS):
        yield f"{INSTANCE_PREFIX}{number:0{FANOUT_DIGITS}x}"


def is_valid_key(key: str) -> bool:
    """True if ``key`` is one :func:`instance_key` could have made."""
    match = _INSTANCE_KEY.match(key)
    return bool(match) and match.group(2).startswith(match.group(1))


def digest_of_key(key: str) -> str:
    """The SHA-256 hex digest a valid key was made from (for ``verify``)."""
    if not is_valid_key(key):
        raise ValueError(f"not an object key made by the archive: {key!r}")
    return key.rsplit("/", 1)[1]
