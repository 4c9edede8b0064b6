"""The one exception the data layer raises for bad input."""


class DataError(ValueError):
    """Bad dataset name, option, file or corruption request.

    The message is one line naming what is wrong and what is allowed, so a CLI can print
    it as-is. Subclassing ValueError keeps ``except ValueError`` callers working.
    """
