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


class TruncatedAudioWarning(AstAudioWarning, AudioInputError):
    """A file holding less audio than its header declares (a WAV cut by a copy or a download): the audio present is
    used, with this warning. Also an AudioInputError, so that a warnings filter turning it into an error
    (`warnings.simplefilter("error", TruncatedAudioWarning)`, what the CLI's `--strict` sets) refuses the file as
    any other bad input is refused: one line naming it, the other inputs still processed."""
