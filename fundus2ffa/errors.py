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
