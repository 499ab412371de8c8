"""astria-mock: an offline, stateful mock of the Astria fine-tuning API."""

__version__ = "0.1.0"

__all__ = ["__version__"]
