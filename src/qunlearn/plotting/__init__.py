"""Figures. Every function reads arrays or tables and writes files; none changes global state."""
