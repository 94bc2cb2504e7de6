"""The package version (one definition; pyproject.toml states the same number for packaging)."""

__version__ = "0.1.0"
