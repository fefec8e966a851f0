"""One exception tree for fanout, and the exit codes that go with it.

ConfigError (bad channel/preset file, bad catalog listing, bad usage) stops a run before
anything renders: exit code 2. MasterError is one master's problem: it becomes `failed`
manifest rows and the run goes on (exit code 1 at the end).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_CONFIG = 2


class FanoutError(Exception):
    """Base of every error fanout raises on purpose."""


class ConfigError(FanoutError):
    """A channel or preset file, a catalog listing or an option is wrong; nothing is rendered."""


class ConfigProblems(ConfigError):
    """Every problem of a configuration at once: `problems` holds one line each
    (`FILE: KEY.PATH: expected X; found Y`), the message all of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} problems in the configuration:\n" + "\n".join(
                "  " + line for line in self.problems)
        super().__init__(message)

    def __reduce__(self):  # pickled whole: args holds the message, not the list
        return (type(self), (self.problems,))


class MasterError(FanoutError):
    """One master (or one of its derivatives) could not be rendered; the rest of the run goes on."""


class NotApplicable(MasterError):
    """A derivative deliberately not made for this master (a ladder rung above its size, a master
    below a channel's minimum source size where the channel says skip): an `n/a` row, not a
    failure. Anything that does not know it reads it as a MasterError (a failure)."""


class RemovalRefused(ConfigError):
    """A run would remove more published files than the removal guard allows; nothing changed."""

    def __init__(self, message: str, paths: list[str], total: int) -> None:
        super().__init__(message)
        self.paths = paths  # relative to OUT, the ones it would remove
        self.total = total  # published files of the channels the run renders


class UnsafePath(ValueError):
    """A path under OUT that fanout must not write or delete (a symbolic link on the way)."""
