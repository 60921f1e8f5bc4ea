"""A researcher's own members of qunlearn's open families: a 6-qubit circuit (``circuits``), an
unlearning method (``unlearn``), a data set (``data``) and a noise kind (``poison``). Nothing here
edits qunlearn."""
