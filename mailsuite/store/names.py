"""Folder names: between what users see and Maildir++ directory names.

Users see Unicode names with ``/`` between levels ("Archive/2024"). On disk a
folder is the directory ``.<level>.<level>`` beside the INBOX's ``cur/``, each
level in modified UTF-7 (RFC 3501 section 5.1.3), as Dovecot and Courier
write it, so a store can be moved between servers. A ``.`` inside a level
cannot stand for itself in Maildir++, so it is written as the base64 run
``&AC4-``, which every modified UTF-7 decoder reads back as ``.``.
"""

from __future__ import annotations

import base64

from mailsuite.store.errors import InvalidMailboxName

DELIMITER = "/"
INBOX = "INBOX"

#: Longest name accepted, in characters; directory entries are limited to 255 bytes.
MAX_NAME_LENGTH = 200


def canonical(name: str) -> str:
    """Spell INBOX (in any case, also as the first level) as ``INBOX``."""
    first, sep, rest = name.partition(DELIMITER)
    if first.upper() == INBOX:
        return INBOX + sep + rest
    return name


def levels(name: str) -> list[str]:
    """Split and check a name; raise ``InvalidMailboxName`` if it is unusable."""
    name = canonical(name)
    if not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidMailboxName(name)
    parts = name.split(DELIMITER)
    for part in parts:
        # "." and ".." levels escape nothing on disk (dots are encoded), but
        # clients such as mbsync refuse to sync an account that lists them.
        if part in ("", ".", "..") or any(ord(c) < 0x20 or c == "\x7f" for c in part):
            raise InvalidMailboxName(name)
    return parts


def directory_name(name: str) -> str:
    """The Maildir++ directory of a folder other than INBOX, e.g. ``.Archive.2024``."""
    parts = levels(name)
    if parts == [INBOX]:
        raise InvalidMailboxName("INBOX has no folder directory")
    encoded = "." + ".".join(encode_level(p) for p in parts)
    if len(encoded.encode()) > 255:
        raise InvalidMailboxName(name)
    return encoded


def folder_name(directory: str) -> str | None:
    """The folder name of a Maildir++ directory, or None if it is not one."""
    if not directory.startswith(".") or directory in (".", ".."):
        return None
    try:
        parts = [decode_utf7(p) for p in directory[1:].split(".")]
    except ValueError:
        return None
    if any(p in ("", ".", "..") or DELIMITER in p for p in parts):
        return None
    return DELIMITER.join(parts)


def encode_level(level: str) -> str:
    """Modified UTF-7 for disk, with ``.`` forced into a base64 run."""
    return encode_utf7(level, extra_encoded=".")


def encode_utf7(text: str, extra_encoded: str = "") -> str:
    """Encode ``text`` in IMAP's modified UTF-7 (RFC 3501 section 5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            run = base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
            out.append("&" + run + "-")
            pending.clear()

    for char in text:
        if 0x20 <= ord(char) <= 0x7E and char not in extra_encoded:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def decode_utf7(text: str) -> str:
    """Decode modified UTF-7; raise ``ValueError`` on a malformed name."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if not 0x20 <= ord(char) <= 0x7E:
            raise ValueError("non-ASCII character in modified UTF-7")
        if char != "&":
            out.append(char)
            i += 1
            continue
        end = text.find("-", i)
        if end < 0:
            raise ValueError("unterminated base64 run")
        run = text[i + 1 : end]
        if not run:
            out.append("&")
        else:
            out.append(_decode_run(run))
        i = end + 1
    return "".join(out)


def _decode_run(run: str) -> str:
    padded = run.replace(",", "/") + "=" * (-len(run) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
        return raw.decode("utf-16-be")
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"bad base64 run: {e}") from None
