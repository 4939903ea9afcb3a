"""The package's error and warning hierarchy (one place, so users can catch by kind), and the
thread-safe capture of warnings that attributes each to the fit that raised it."""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator
from typing import Any

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


_capture = threading.local()
_capture_state: dict[str, Any] = {"users": 0, "saved": None, "shown": None}
_capture_lock = threading.Lock()


def _show_in_thread(message, category, filename, lineno, file=None, line=None) -> None:
    """showwarning while captures are active: a warning goes to the capture of the thread that
    raised it, or is shown as it would have been."""
    records = getattr(_capture, "records", None)
    if records is None:
        _capture_state["shown"](message, category, filename, lineno, file, line)
    else:
        records.append(warnings.WarningMessage(message, category, filename, lineno, file, line))


@contextlib.contextmanager
def captured_warnings() -> Iterator[list]:
    """Every warning raised in this thread while the body runs, recorded (as warnings.catch_warnings
    with record=True and the 'always' filter) but thread-safely: toys fitted at once in several
    threads of one process get their own warnings only. One process-wide hook is installed while any
    capture is active, and the process's own settings come back when the last one ends."""
    with _capture_lock:
        if _capture_state["users"] == 0:  # the module's own save and restore of filters and showwarning
            _capture_state["shown"], _capture_state["saved"] = warnings.showwarning, warnings.catch_warnings()
            _capture_state["saved"].__enter__()
            warnings.simplefilter("always")
            warnings.showwarning = _show_in_thread
        _capture_state["users"] += 1
    previous, records = getattr(_capture, "records", None), []
    _capture.records = records
    try:
        yield records
    finally:
        _capture.records = previous
        with _capture_lock:
            _capture_state["users"] -= 1
            if _capture_state["users"] == 0:
                _capture_state["saved"].__exit__(None, None, None)


def warning_text(record: warnings.WarningMessage) -> str:
    """A recorded warning as stored with a toy: 'Category: message'."""
    return f"{type(record.message).__name__}: {record.message}"
