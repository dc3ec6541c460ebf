"""Data errors that say which file, which line, and what was expected."""


class DataError(ValueError):
    """Raised for missing files, malformed rows and empty splits; the message names the path."""
