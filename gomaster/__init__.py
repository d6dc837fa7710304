"""gomaster: pick exactly one master among the processes of a service through a backend lease."""

from gomaster._version import __version__

__all__ = ["__version__"]
