"""Domain errors of KMS, one class per error code of botocore's `kms` model (plus the
ValidationException every AWS JSON service answers a constraint violation with)."""

from __future__ import annotations


class KmsError(Exception):
    """An error KMS would return: `code` is the `__type` of its JSON error document."""

    code = "KMSInternalException"
    http_status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class KMSInternalException(KmsError):
    code = "KMSInternalException"
    http_status = 500


class ValidationException(KmsError):
    code = "ValidationException"


class NotFoundException(KmsError):
    code = "NotFoundException"


class InvalidArnException(KmsError):
    code = "InvalidArnException"


class AlreadyExistsException(KmsError):
    code = "AlreadyExistsException"


class InvalidAliasNameException(KmsError):
    code = "InvalidAliasNameException"


class DisabledException(KmsError):
    code = "DisabledException"


class KMSInvalidStateException(KmsError):
    code = "KMSInvalidStateException"


class InvalidMarkerException(KmsError):
    code = "InvalidMarkerException"


class TagException(KmsError):
    code = "TagException"


class LimitExceededException(KmsError):
    code = "LimitExceededException"


class UnsupportedOperationException(KmsError):
    code = "UnsupportedOperationException"


class AccessDeniedException(KmsError):
    code = "AccessDeniedException"


class UnknownOperationException(KmsError):
    code = "UnknownOperationException"


class UnrecognizedClientException(KmsError):
    code = "UnrecognizedClientException"
