"""The package's exception types, in a leaf module so that any layer can raise them.

One `ConfigError` for every validated configuration (the policy's `model.config`, the robot's
`runtime.config`): a value is missing, unknown, of the wrong type or out of range, and the message
quotes it. A `ValueError`, so callers that only know the built-in still catch it.
"""


class ConfigError(ValueError):
    """A configuration value is invalid (missing, unknown, wrong type, out of range); the message quotes it."""


class TrainingError(RuntimeError):
    """Training cannot continue (non-finite loss, missing checkpoint to resume, ...)."""
