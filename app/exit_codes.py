"""The exit statuses of ``gatebot`` (README), in one leaf module every command imports."""

EXIT_OK = 0
"""Done."""
EXIT_DIVERGED = 1
"""A session replay diverged from the live session, or check-invariants found a violation."""
EXIT_BAD_INPUT = 2
"""The configuration (or another input: a journal, a recording, a candle file) is wrong; nothing was started."""
EXIT_HALTED = 3
"""The run finished but an instance halted (a damaged journal, a halt policy)."""
EXIT_EXCHANGE = 4
"""An exchange could not be used (credentials refused, connection)."""
EXIT_BROKEN_PIPE = 141
"""stdout was closed by its reader (``gatebot status | head -1``): 128 + SIGPIPE, as a shell reports a tool
that stopped on it."""
