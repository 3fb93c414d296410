"""Domain errors of the Recycle Bin (`rbin`) API, one class per error shape of botocore's
`rbin` model, each with the Reason its shape's enum gives. The rest-json wire writes them."""

from __future__ import annotations

from fakestor.direct_errors import DirectError


class RbinValidationException(DirectError):
    code = "ValidationException"
    http_status = 400

    def __init__(self, message: str, reason: str = "INVALID_PARAMETER_VALUE") -> None:
        super().__init__(message, reason)


class RuleNotFoundException(DirectError):
    code = "ResourceNotFoundException"
    http_status = 404

    def __init__(self, identifier: str) -> None:
        # AWS documents no wording; this one names the rule asked for.
        super().__init__(f"Rule {identifier} not found.", "RULE_NOT_FOUND")


class ServiceQuotaExceededException(DirectError):
    code = "ServiceQuotaExceededException"
    http_status = 402

    def __init__(self, message: str) -> None:
        super().__init__(message, "SERVICE_QUOTA_EXCEEDED")


class ConflictException(DirectError):
    code = "ConflictException"
    http_status = 409

    def __init__(self, message: str) -> None:
        super().__init__(message, "INVALID_RULE_STATE")


class RbinInternalServerException(DirectError):
    code = "InternalServerException"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)


class RbinUnknownOperationException(DirectError):
    """A method and path that no operation of the `rbin` model serves."""

    code = "UnknownOperationException"
    http_status = 404

    def __init__(self, method: str, path: str) -> None:
        super().__init__(f"No Recycle Bin operation is served at {method} {path}.")


class RbinThrottlingException(DirectError):
    """Above the request rate of its action (`fakestor server --request-rate rbin:...`)."""

    # The rbin model names no throttling shape; ThrottlingException is the code AWS's
    # rest-json services answer with, and the one botocore's retry handler backs off on.
    code = "ThrottlingException"
    http_status = 400

    def __init__(self, action: str) -> None:
        # AWS documents no message for it; this wording is fakestor's.
        super().__init__(f"Rate exceeded for {action}; retry with backoff.")
