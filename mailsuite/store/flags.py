"""Message flags: IMAP system flags and the letters of the Maildir info suffix.

A file named ``<key>:2,<letters>`` carries its flags in ``<letters>``, in
ASCII order (https://cr.yp.to/proto/maildir.html). Letters we do not know
(other programs' keywords, such as Dovecot's lowercase ``a``-``z``) are kept
as they are when we change the flags we do know.
"""

from __future__ import annotations

#: Maildir letter for each IMAP system flag (RFC 3501 section 2.3.2).
LETTER_OF_FLAG = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "$Forwarded": "P",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}

FLAG_OF_LETTER = {letter: flag for flag, letter in LETTER_OF_FLAG.items()}

#: Flags a client may set and that survive restarts.
PERMANENT_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "$Forwarded")


def normalise_letters(letters: str) -> str:
    """Distinct letters in ASCII order, as the Maildir spec asks."""
    return "".join(sorted(set(letters)))


def letters_to_flags(letters: str) -> list[str]:
    """IMAP flags for the letters we know; unknown letters are left out."""
    return [FLAG_OF_LETTER[c] for c in sorted(set(letters)) if c in FLAG_OF_LETTER]


def flag_to_letter(flag: str) -> str | None:
    """The letter for an IMAP flag (case-insensitive), or None if it has none."""
    for name, letter in LETTER_OF_FLAG.items():
        if name.lower() == flag.lower():
            return letter
    return None


def replace_known(letters: str, flags: list[str] | set[str] | tuple[str, ...]) -> str:
    """Set the known flags to ``flags`` and keep every unknown letter."""
    kept = {c for c in letters if c not in FLAG_OF_LETTER}
    wanted = {letter for f in flags if (letter := flag_to_letter(f)) is not None}
    return normalise_letters("".join(kept | wanted))
