"""Makes ``twistd mailsuite`` exist; ``mailsuite.tap`` does the work, loaded lazily."""

from twisted.application.service import ServiceMaker

mailsuite = ServiceMaker(
    "mailsuite",
    "mailsuite.tap",
    "A complete mail system: SMTP, submission, POP3 and IMAP over one Maildir store.",
    "mailsuite",
)
