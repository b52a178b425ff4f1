"""The one exception type the engine raises for problems a user can fix.

The CLI prints a `WMError` as a single line (`wm: error: ...`) and exits non-zero; the message must say what
was wrong and what to do about it. This module imports nothing, so every package (including `envs` and
`planners`) may raise it without breaking the import rule.
"""


class WMError(Exception):
    """A user-facing error: bad input, a missing file, a damaged store. Message = problem + fix, one line."""
