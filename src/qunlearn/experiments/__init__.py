"""Experiments: typed configs at the edge, tidy tables out. Library code below never sees a config."""
