"""A griffe extension for the API page: the docstrings use Sphinx roles (:func:`make_train`),
which Markdown would print as they stand; show each as the code span it names."""

from __future__ import annotations

import re

from griffe import Extension

ROLE = re.compile(r":(?:func|class|data|mod|attr|meth|obj|exc):`~?([^`]+)`")


class SphinxRolesAsCode(Extension):
    def on_instance(self, *, obj, **kwargs) -> None:  # griffe calls this for every object
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(r"`\1`", obj.docstring.value)
