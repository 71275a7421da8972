"""User-facing errors: raised for bad input, printed as one message without a traceback."""


class UserError(Exception):
    """A problem the user can fix; the message names it and says how."""


class ConfigError(UserError):
    """A config key holds a value the run cannot use."""


class DataError(UserError):
    """The dataset is missing, empty or malformed."""


def one_line(e: BaseException, limit: int = 300) -> str:
    """An exception's text as one line for an `error:` message: a YAML error's problem and where it is, any
    other text with its whitespace (newlines, tabs) collapsed; cut at `limit` characters. Log the full text."""
    problem, mark = getattr(e, "problem", None), getattr(e, "problem_mark", None)
    if problem and mark is not None:
        text = f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    else:
        text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
