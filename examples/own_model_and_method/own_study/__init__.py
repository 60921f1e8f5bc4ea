"""A researcher's own members of qunlearn's open families: a 6-qubit circuit (``circuits``), an
unlearning method (``unlearn``) and a data set (``data``). Nothing here edits qunlearn."""
