"""Exception classes raised by minibatch_rx.

Every error the library raises on purpose is a :class:`MinibatchError`.  Each
one also derives from the built-in exception a caller would naturally catch
(``TypeError`` for a bad payload, ``ValueError`` for a bad name or argument,
``ConnectionError`` for an unreachable store), so existing ``except`` clauses
keep working.
"""

from __future__ import annotations


class MinibatchError(Exception):
    """Base class of every error raised by minibatch_rx."""


class InvalidPayloadError(MinibatchError, TypeError):
    """A payload is not a dict of JSON/BSON-compatible values.

    Raised before anything is stored; the message names the offending key
    path and type, e.g. ``payload['when']: datetime is not JSON-compatible``.
    """


class InvalidStreamNameError(MinibatchError, ValueError):
    """A stream name is empty, too long or uses characters that are not allowed."""


class InvalidURLError(MinibatchError, ValueError):
    """A store URL has an unknown scheme or is malformed."""


class InvalidArgumentError(MinibatchError, ValueError):
    """An argument such as a window size or an interval is out of range."""


class StoreUnavailableError(MinibatchError, ConnectionError):
    """The store could not be reached within its documented timeout."""


class StoreBusyError(MinibatchError, TimeoutError):
    """The store stayed locked by other writers past the retry budget."""


class PipelineStoppedError(MinibatchError, RuntimeError):
    """A pipeline was used after it was stopped."""


class PayloadTooLargeError(InvalidPayloadError):
    """A payload (or a batch) is larger than the store accepts, e.g. MongoDB's
    16 MB document limit. Raised before anything is stored."""


class StoreFullError(StoreUnavailableError):
    """The store's disk (or quota) is full. Nothing of the failed write was
    stored; running consumers wait it out like any outage."""


class StoreOpenError(MinibatchError, OSError):
    """The store cannot be opened: the file is not a database (or is corrupt),
    the path is a directory, or its folder does not exist."""


class ReadOnlyStoreError(MinibatchError, PermissionError):
    """A write was attempted on a store opened read-only."""


class StoreAuthenticationError(MinibatchError, PermissionError):
    """The store refused the credentials in the URL (not retried: it cannot
    succeed until the URL or the server's users change)."""


class StageTimeoutError(MinibatchError, TimeoutError):
    """A user function ran longer than the pipeline's ``with_timeout`` limit.

    The call counts as failed (retried, then dead-lettered); its thread is
    abandoned, since Python cannot stop a running thread."""


class CompatibilityError(MinibatchError, NotImplementedError):
    """A feature of the original ``minibatch`` package that minibatch_rx does
    not keep; the message says what to use instead."""


class LeaseExpiredError(MinibatchError, RuntimeError):
    """A group member's run was about to record a decision after its partition lease
    may have run out (the member could not renew it, or was paused): the run stops
    instead, and whoever holds the partition now goes on from the last commit."""
