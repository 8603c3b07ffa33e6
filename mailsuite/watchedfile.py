"""Small text files that other processes change: the users and aliases files.

The ``mailsuite`` command rewrites them (atomically, so the inode changes)
while the server runs; the server rereads one only when its inode, size or
modification time differ from what it last read, so a lookup costs a stat.
"""

from __future__ import annotations

import os

#: What identifies one version of a file: inode, size, mtime in nanoseconds.
Signature = tuple[int, int, int]


def read_if_changed(
    path: str, known: Signature | None
) -> tuple[list[str] | None, Signature | None]:
    """The file's lines and signature, or ``(None, known)`` if it is unchanged.

    A missing file reads as no lines. Undecodable bytes are kept as surrogate
    escapes so a line can still be reported by number.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return [], None

    signature = (st.st_ino, st.st_size, st.st_mtime_ns)
    if signature == known:
        return None, known

    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return f.read().splitlines(), signature
