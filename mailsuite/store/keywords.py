"""IMAP keywords ($Junk, $Forwarded, $label1...) as Maildir letters.

Maildir has 26 lowercase letters for keywords; which letter means which
keyword is kept per folder in ``dovecot-keywords`` (``<n> <keyword>`` per
line, letter ``a`` + n), the file Dovecot uses, so flags survive a move
between the two servers in either direction.
"""

from __future__ import annotations

import os
import string

from mailsuite import durable

FILENAME = "dovecot-keywords"
LETTERS = string.ascii_lowercase


class Keywords:
    """The keyword-to-letter map of one folder."""

    def __init__(self, folder_path: str) -> None:
        self.path = os.path.join(folder_path, FILENAME)
        self.names: dict[int, str] = {}
        self._load()

    def _load(self) -> None:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            number, _, name = line.partition(" ")
            if number.isdigit() and int(number) < len(LETTERS) and name:
                self.names[int(number)] = name

    def name_for(self, letter: str) -> str | None:
        if letter not in LETTERS:
            return None
        return self.names.get(LETTERS.index(letter))

    def letter_for(self, keyword: str, create: bool = False) -> str | None:
        """The letter of a keyword (matched without case); a new one if asked and free."""
        wanted = keyword.lower()
        for number, name in self.names.items():
            if name.lower() == wanted:
                return LETTERS[number]
        if not create:
            return None
        free = [n for n in range(len(LETTERS)) if n not in self.names]
        if not free:
            return None
        self.names[free[0]] = keyword
        self._save()
        return LETTERS[free[0]]

    def has_room(self) -> bool:
        return len(self.names) < len(LETTERS)

    def all(self) -> list[str]:
        return [self.names[n] for n in sorted(self.names)]

    def _save(self) -> None:
        text = "".join(f"{n} {name}\n" for n, name in sorted(self.names.items()))
        durable.replace_file(self.path, text.encode("utf-8"))
