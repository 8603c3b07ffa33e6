"""The POP3 server (RFC 1939, 2449, 2595, 5034) over the shared Maildir store.

``server`` has the session and its per-state command tables, ``maildrop``
the session's fixed view of INBOX, ``transfer`` the dot-stuffed, streamed
RETR and TOP, ``replies`` every fixed reply.
"""

from mailsuite.pop3.server import POP3Factory, POP3Session

__all__ = ["POP3Factory", "POP3Session"]
