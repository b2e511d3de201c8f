"""Kept only for active.phase, the old path of the active phase (see its docstring)."""
