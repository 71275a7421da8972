"""User-facing errors: raised for bad input, printed as one message without a traceback (`deepfake.exits`)."""

import signal


class UserError(Exception):
    """A problem the user can fix; the message names it and says how."""


class ConfigError(UserError):
    """A config key holds a value the run cannot use."""


class DataError(UserError):
    """The dataset is missing, empty or malformed."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal (`deepfake.system.interrupt`); `exit_code` is what the process should exit with."""

    def __init__(self, signum: int, message: str = "", abort: bool = False) -> None:
        super().__init__(message or f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.abort = abort

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def one_line(e: BaseException, limit: int = 300) -> str:
    """An exception's text as one line for an `error:` message: a YAML error's problem and where it is, any
    other text with its whitespace (newlines, tabs) collapsed; cut at `limit` characters. Log the full text."""
    problem, mark = getattr(e, "problem", None), getattr(e, "problem_mark", None)
    if problem and mark is not None:
        text = f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    else:
        text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
