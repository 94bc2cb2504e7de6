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
