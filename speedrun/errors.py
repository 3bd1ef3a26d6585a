"""The project's expected-error types, which the command line prints as one line
(``speedrun: error: <what> — <fix>``, :mod:`speedrun.cli`)."""


class ConfigError(ValueError):
    """A record config that cannot run: an unknown key, a value of the wrong type or range, a file
    that does not load. The message names the key or file and the fix (exit status 2)."""
