"""The package version, in a module of its own: checkpoints and backups record it without importing the
package's API (`deepfake/__init__.py` reaches every room)."""

__version__ = "0.1.0"
