"""User-facing errors: raised for bad input, printed as one message without a traceback."""


class UserError(Exception):
    """A problem the user can fix; the message names it and says how."""


class ConfigError(UserError):
    """A config key holds a value the run cannot use."""


class DataError(UserError):
    """The dataset is missing, empty or malformed."""
