"""The ESMTP receiver: MX, submission and submissions listeners.

``SMTPFactory(ctx, kind)`` is the whole public face; see ``server``.
"""

from mailsuite.smtp.server import SMTPFactory, SMTPSession

__all__ = ["SMTPFactory", "SMTPSession"]
