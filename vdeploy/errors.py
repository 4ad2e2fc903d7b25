"""Errors a user can cause. The CLI prints them on one line and exits 2; anything else is a bug."""


class UserError(Exception):
    """Bad input from the user: a file, a flag, a config, an image. Exit code 2."""


class BundleError(UserError):
    """A bundle that is missing files, was edited, or has an unsupported schema."""


class ConfigError(UserError):
    """A framework config that cannot be read or asks for something unsupported."""


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded safely or does not fit the model."""


class VerificationError(UserError):
    """An exported backend disagrees with PyTorch beyond tolerance."""
