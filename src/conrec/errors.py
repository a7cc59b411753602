"""Error types users see. Each message names the offending file, column, item or field."""


class ConrecError(Exception):
    """Base class: the CLI prints these as one clear line instead of a traceback."""


class DataValidationError(ConrecError):
    """Input data does not fit the canonical tables (missing column, bad value, unknown item...)."""


class ConfigError(ConrecError):
    """A YAML/pydantic config is malformed or names something that does not exist."""


class StageInputError(ConrecError):
    """A stage was asked to run before the stage it depends on wrote its outputs, or they are corrupt."""
