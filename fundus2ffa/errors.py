"""Errors raised for bad user input. Each message names the file or config key and the fix."""


class Fundus2FFAError(Exception):
    """Base class of every error this package raises on purpose for bad input."""


class DataError(Fundus2FFAError, ValueError):
    """A data file or folder is missing, unreadable, mismatched or of the wrong kind."""


class ConfigError(Fundus2FFAError, ValueError):
    """A config value is missing, unknown or inconsistent."""


class WeightsError(Fundus2FFAError, FileNotFoundError):
    """Pretrained weights are missing or do not match their checksum."""


class CheckpointError(DataError):
    """A checkpoint is missing, corrupt, truncated, refused as unsafe, or cannot be written (disk full)."""


class ExportError(Fundus2FFAError, RuntimeError):
    """A model cannot be exported, or its exported graph disagrees with PyTorch."""


class OutputError(Fundus2FFAError, OSError):
    """An output cannot be written: no space left, a read-only or missing folder, a path that is a folder."""


class UnsafeTargetError(CheckpointError):
    """A stored config names a class outside fundus2ffa's allow-list: refused before anything is built."""


class Stopped(Fundus2FFAError):
    """The command was stopped by SIGTERM or SIGINT; the message says what was kept and how to resume."""
