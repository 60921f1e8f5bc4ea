"""The one exception type users see: a one-line message that names the problem and the fix."""

from __future__ import annotations

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
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else '(no message)'}"
