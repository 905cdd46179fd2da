"""The package version, for every layer (``jupyter_tfenv.__version__`` is the same)."""

from __future__ import annotations

try:
    from jupyter_tfenv._version import __version__
except ImportError:  # a checkout that was never built
    __version__ = "0.0.0.dev0"
