"""The one exception type a user sees.

A `DflearnError` is a problem the user can fix (a bad name, a missing file, a run
that diverged); the CLI prints its message as a single line and exits non-zero,
so every message should name the problem *and* the fix.
"""


class DflearnError(Exception):
    """A user-facing error: one line that says what is wrong and what to do."""
