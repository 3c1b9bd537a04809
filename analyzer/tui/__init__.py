"""The Textual TUI behind `lonscope open` (see analyzer/cmd_open.py)."""
from __future__ import annotations

__all__ = ["LonscopeApp", "Session"]


def __getattr__(name):
    if name == "LonscopeApp":
        from .app import LonscopeApp
        return LonscopeApp
    if name == "Session":
        from .session import Session
        return Session
    raise AttributeError(name)
