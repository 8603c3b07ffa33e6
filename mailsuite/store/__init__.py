"""The Maildir store that SMTP, POP3 and IMAP share.

See ``maildir`` for the layout and durability rules, ``uidlist`` for how
message identities persist, ``errors`` for what callers must handle.
"""

from mailsuite.store.errors import (
    InvalidMailboxName,
    MailboxExists,
    MailboxNotEmpty,
    MessageGone,
    NoSuchMailbox,
    OverQuota,
    StoreError,
    TemporaryFailure,
)
from mailsuite.store.maildir import Account, Folder, FolderChanges, Message, Store, to_crlf

__all__ = [
    "Account",
    "Folder",
    "FolderChanges",
    "InvalidMailboxName",
    "MailboxExists",
    "MailboxNotEmpty",
    "Message",
    "MessageGone",
    "NoSuchMailbox",
    "OverQuota",
    "Store",
    "StoreError",
    "TemporaryFailure",
    "to_crlf",
]
