"""Experiments: typed configs at the edge, tidy tables out. The library never sees a config."""
