"""qunlearn: poisoning, unlearning and loss-landscape studies of quantum and classical classifiers.

Import order of the subpackages (one way only):
data, models -> train -> unlearn, metrics, hessian -> experiments -> plotting -> cli.
"""

__version__ = "0.1.0"
