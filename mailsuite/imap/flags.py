r"""Flags as IMAP clients see them: system flags and a folder's keywords.

The store keeps system flags as Maildir letters and keywords ($Junk,
$label1, NonJunk...) as lowercase letters named in each folder's
``dovecot-keywords`` file, so a keyword's letter differs from folder to
folder and copies must be translated. PERMANENTFLAGS offers ``\*`` while the
folder has a free letter (26 per folder); past that, new keywords are
dropped, which the FETCH FLAGS answer shows (RFC 3501 7.1).
"""

from __future__ import annotations

from collections.abc import Iterable

from mailsuite.imap.responses import PERMANENTFLAGS
from mailsuite.store import Folder
from mailsuite.store.flags import PERMANENT_FLAGS, flag_to_letter

RECENT = "\\Recent"


def announcement(folder: Folder, readonly: bool) -> bytes:
    """The FLAGS and PERMANENTFLAGS responses for SELECT, and when keywords are added."""
    flags = [*PERMANENT_FLAGS, *folder.keywords.all()]
    line = b"* FLAGS (" + " ".join(flags).encode("utf-8", "replace") + b")\r\n"
    if readonly:
        return line + f"* OK [{PERMANENTFLAGS} ()] No permanent flags\r\n".encode()
    if folder.keywords.has_room():
        flags.append("\\*")
    permanent = " ".join(flags).encode("utf-8", "replace")
    return (
        line + b"* OK [" + PERMANENTFLAGS.encode() + b" (" + permanent + b")] Flags permitted\r\n"
    )


def updated(current: list[str], requested: list[str], mode: str) -> list[str]:
    r"""STORE's result: ``+`` adds, ``-`` removes, otherwise replaces (case-insensitive).

    \Recent is the server's to set (RFC 3501 2.3.2) and is never stored.
    """
    requested = [f for f in requested if f.lower() != RECENT.lower()]
    if mode == "+":
        have = {f.lower() for f in current}
        return [*current, *(f for f in requested if f.lower() not in have)]
    if mode == "-":
        drop = {f.lower() for f in requested}
        return [f for f in current if f.lower() not in drop]
    return requested


def letters_for(folder: Folder, flags: Iterable[str]) -> str:
    """Maildir letters of ``flags`` in ``folder``, naming new keywords while letters last."""
    letters = set()
    for flag in flags:
        letter = flag_to_letter(flag)
        if letter is None and not flag.startswith("\\"):
            letter = folder.keywords.letter_for(flag, create=True)
        if letter is not None:
            letters.add(letter)
    return "".join(sorted(letters))


def letter_of(folder: Folder, flag: str) -> str | None:
    """The letter of a system flag or existing keyword in ``folder`` (for SEARCH)."""
    letter = flag_to_letter(flag)
    if letter is None and not flag.startswith("\\"):
        letter = folder.keywords.letter_for(flag)
    return letter
