"""Errors carrying a gRPC status code and the server's message, shared by server and client,
and the error of a configuration the server cannot use.

Both are `tfrecords_tools.base.errors.UserError`s: the command line prints them as one line.
"""

from __future__ import annotations

import re

import grpc

from tfrecords_tools.base.errors import UserError


class ConfigError(UserError, ValueError):
    """A flag or configuration file the server cannot use; the message names it."""


class ServingError(UserError):
    """A call failed with `code`; `message` is the server's text, unchanged."""

    code = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgumentError(ServingError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(ServingError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPreconditionError(ServingError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class UnavailableError(ServingError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(ServingError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ResourceExhaustedError(ServingError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnimplementedError(ServingError):
    code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(ServingError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE = {cls.code: cls for cls in (
    InvalidArgumentError, NotFoundError, FailedPreconditionError, UnavailableError,
    DeadlineExceededError, ResourceExhaustedError, UnimplementedError, InternalError)}


def decoder_refusal(message: str) -> str | None:
    """The reason our SavedModel's image decoder gives when it refuses an image (it
    refuses with a TensorFlow assertion naming it, `keras_alexnet.preprocessing`), from
    an error message; None when the message holds none."""
    refused = re.search(r"assertion failed: \[(.*?)\]", message)
    return refused.group(1) if refused else None


def error_for(code: grpc.StatusCode, message: str) -> ServingError:
    """The most specific `ServingError` subclass for a status code."""
    cls = _BY_CODE.get(code, ServingError)
    return cls(message) if cls is not ServingError else ServingError(message, code)
