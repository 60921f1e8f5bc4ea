"""The one exception type users see: a one-line message that names the problem and the fix."""


class QunlearnError(Exception):
    """Bad input or a broken environment. ``str(err)`` is one line: what is wrong, what to do."""
