"""The package version, in a module of its own so that every layer can name it without importing the package
facade (which reaches up to the engine)."""

__version__ = "0.1.0"
