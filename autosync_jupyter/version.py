"""The package's version, in a module of its own so any layer can name it."""

__all__ = ["__version__"]

__version__ = "0.1.0"
