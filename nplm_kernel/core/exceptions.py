"""The package's error and warning hierarchy (one place, so users can catch by kind)."""

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

#: At most this many characters of a user's value are echoed in an error message.
ECHO_LIMIT = 80


def brief(value: object) -> str:
    """repr(value), cut to ECHO_LIMIT characters (with the full length) so that an error about a
    huge value stays one readable line."""
    text = repr(value)
    return text if len(text) <= ECHO_LIMIT else f"{text[:ECHO_LIMIT]}... ({len(text)} characters)"


class NPLMError(Exception):
    """Base class of every error raised on purpose by nplm-kernel."""


class InputError(NPLMError, ValueError):
    """An argument is malformed: wrong shape, non-finite values, empty sample, bad weights."""


class ConfigurationError(NPLMError, ValueError):
    """A hyperparameter or setting is invalid (unknown dtype, unavailable device, bad penalty)."""


class FitError(NPLMError, RuntimeError):
    """A fit failed numerically (Cholesky failure, non-finite loss); the message names the stage."""


class NotFittedError(_SklearnNotFittedError, NPLMError):
    """The estimator was used before `fit`."""


class ConvergenceWarning(UserWarning):
    """A solver stopped before meeting its tolerance; the result may be inaccurate."""


class SampleSizeWarning(UserWarning):
    """The reference sample is not much larger than the data sample (its effective size should be >> N_D)."""


class FitConsistencyWarning(UserWarning):
    """A fit ended in a state a converged fit cannot reach (e.g. tau < Delta); reported, not clipped."""


class NormalizationWarning(UserWarning):
    """The reference weights do not look normalised to the expected yield of the data."""


class ReferenceSupportWarning(UserWarning):
    """Data events lie where the reference sample cannot support them: t there measures how empty
    the reference sample is, not the data (docs: statistics, reference support)."""
