"""Errors the store raises, in no protocol's words.

Each protocol turns these into its own reply in one place: SMTP a code with
an enhanced status code, POP3 ``-ERR [SYS/TEMP]``, IMAP ``NO [CODE]``.
"""


class StoreError(Exception):
    """Base of every store error. ``temporary`` says whether a retry may work."""

    temporary = False


class NoSuchMailbox(StoreError):
    """The user or the folder does not exist."""


class MailboxExists(StoreError):
    """A folder of that name already exists."""


class InvalidMailboxName(StoreError):
    """A folder name that is empty, escapes the store, or is otherwise unusable."""


class MailboxNotEmpty(StoreError):
    """The folder cannot be removed in its state (it has subfolders, or is INBOX)."""


class MessageGone(StoreError):
    """The message was expunged, here or by another program."""


class OverQuota(StoreError):
    """Storing this would pass the user's limit."""


class TemporaryFailure(StoreError):
    """The disk failed (full, I/O error); the operation may work later."""

    temporary = True
