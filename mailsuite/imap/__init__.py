"""IMAP4rev1 (RFC 3501): the server and the message model it answers FETCH and SEARCH from.

The message model (``message``, with ``mime``, ``envelope``, ``bodystructure``,
``searchtext`` and their helpers) is pure: functions over the bytes of one
message as served, no Twisted and no I/O, so it can be tested against a
recorded oracle and reused by any code that needs IMAP views of a message.
"""
