"""The one exception type users see: a one-line message that names the problem and the fix."""

from __future__ import annotations

import contextlib
import difflib
import sys
from collections.abc import Iterable


class QunlearnError(Exception):
    """Bad input or a broken environment. ``str(err)`` is one line: what is wrong, what to do."""


def did_you_mean(name, options: Iterable) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``options`` to ``name``, else ``""``."""
    hint = difflib.get_close_matches(str(name), [str(o) for o in options], n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def warn(message: str) -> None:
    """One ``warning: ...`` line on stderr (not a Python ``UserWarning`` with a source echo)."""
    print("warning: " + " ".join(str(message).split()), file=sys.stderr, flush=True)


def first_line(err: BaseException) -> str:
    """``"TypeName: first line of the message"``: how a user member's exception is reported."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    head = lines[0] if lines else "(no message)"
    if head.endswith(":") and len(lines) > 1:  # "...to be mapped:" names the problem below it
        head = f"{head} {lines[1]}"
    return f"{type(err).__name__}: {head}"


@contextlib.contextmanager
def user_code(named: str, failed: str):
    """Run a user's member: its :class:`QunlearnError` comes out prefixed with ``named``, any
    other exception as the one line ``failed: TypeName: message`` (never a traceback)."""
    try:
        yield
    except QunlearnError as err:
        raise QunlearnError(f"{named}: {err}") from None
    except Exception as err:  # user code: whatever it raises becomes one line
        raise QunlearnError(f"{failed}: {first_line(err)}") from None
