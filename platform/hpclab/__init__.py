"""HPCLab shared library: ``hpclab.session()`` tells a kernel what it may use."""

from .session import Session, session

__version__ = "0.1.0"

__all__ = ["Session", "session", "__version__"]
