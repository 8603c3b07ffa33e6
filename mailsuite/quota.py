"""The per-user storage quota (``limits.quota``), in no protocol's words.

Usage is the size as served (CRLF line ends) of every message in every
folder of the account, which is what IMAP's STORAGE resource counts (RFC
9208 5.1). ``check`` raises the store's ``OverQuota``; each protocol turns
that into its own reply (IMAP ``NO [OVERQUOTA]``, SMTP 452 4.2.2).
"""

from __future__ import annotations

from mailsuite.store import Account, NoSuchMailbox, OverQuota


def storage_used(account: Account) -> int:
    """Octets stored over all folders, as served."""
    total = 0
    for name in account.folder_names():
        try:
            folder = account.folder(name, create_inbox=True)
        except NoSuchMailbox:
            continue  # removed while we looked
        folder.refresh()
        total += sum(folder.wire_size(m) for m in folder.messages)
    return total


def check(account: Account, limit: int, adding: int) -> None:
    """Raise ``OverQuota`` if storing ``adding`` more octets would pass ``limit`` (0: none)."""
    if limit and storage_used(account) + adding > limit:
        raise OverQuota(f"{account.address} would pass the quota of {limit} octets")
