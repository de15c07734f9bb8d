"""Errors raised by the scorers package.

Every error names the file or folder involved, what was expected, and how to fix it, because
the person reading it is a ComfyUI user who put a file in a models folder.
"""

REWARDS_DIR = "models/ttsvar_rewards"
FEATURES_DIR = "models/ttsvar_features"


class ScorerError(Exception):
    """Base class; never raised directly."""


class WrongFileError(ScorerError, ValueError):
    """The file exists but is not the checkpoint this loader needs."""


class ModelFileNotFoundError(ScorerError, FileNotFoundError):
    """A weights file, folder or vocabulary is missing."""


class MissingDependencyError(ScorerError, ImportError, ValueError):
    """An optional Python package needed by one loader is not installed.

    It is also a ValueError so callers that catch configuration errors catch this one too.
    """


class ImageBatchError(ScorerError, ValueError):
    """The images passed to score()/extract() are not a valid batch."""


def not_found(path, expected: str, folder: str) -> ModelFileNotFoundError:
    return ModelFileNotFoundError(
        f"{path} does not exist. Expected {expected}; put it in {folder} "
        f"(see docs/scorers.md for where to get it)."
    )


def missing_dependency(package: str, pip_name: str, needed_for: str) -> MissingDependencyError:
    return MissingDependencyError(
        f"{needed_for} needs the optional Python package '{package}', which is not installed. "
        f"Install it into ComfyUI's Python with: python -m pip install {pip_name}"
    )
