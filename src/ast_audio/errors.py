"""Typed errors. Every user-facing failure is one of these; the CLI prints the message in one line."""


class AstAudioError(Exception):
    """Base class: the message says what was expected, what was found, and what to do."""


class ConfigError(AstAudioError, ValueError):
    """An impossible or inconsistent configuration."""


class AudioInputError(AstAudioError, ValueError):
    """Audio that cannot be used: unreadable, empty, non-finite, wrong shape or rate."""


class CheckpointError(AstAudioError, ValueError):
    """A checkpoint that is missing, of an unknown format, or does not fit the requested model."""


class ExportError(AstAudioError):
    """A model, option or output path that cannot be exported (one line: what, and what to do)."""


class AstAudioWarning(UserWarning):
    """Something works but not as the user probably wants (an emulated precision, a slow path): the CLI prints it
    as one line `ast-audio: warning: <message>`."""


class OutputError(AstAudioError, OSError):
    """An output (result, checkpoint, model folder) that cannot be written: a full disk, a missing permission, a
    file where a folder should be. The message names the path and, for a full disk, the bytes needed and free.
    Also an OSError (with `errno`), so callers that handle failed writes as OSError keep working; `target` is the
    path that could not be written."""

    def __init__(self, message: str, target: object = None, errno: int | None = None) -> None:
        super().__init__(message)
        self.target = target
        self.errno = errno
