"""Domain errors of the EBS control plane, one class per EC2 error code.

Messages follow EC2's wording so that clients which match on them keep working.
"""

from __future__ import annotations


class Ec2Error(Exception):
    """An error EC2 would return to the client; `code` is the EC2 error code."""

    code = "InternalError"
    http_status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InternalError(Ec2Error):
    code = "InternalError"
    http_status = 500


class InvalidAction(Ec2Error):
    code = "InvalidAction"

    def __init__(self, action: str) -> None:
        super().__init__(f"The action {action} is not valid for this web service.")


class UnknownParameter(Ec2Error):
    code = "UnknownParameter"

    def __init__(self, name: str) -> None:
        super().__init__(f"The parameter {name} is not recognized")


class MissingParameter(Ec2Error):
    code = "MissingParameter"

    def __init__(self, name: str) -> None:
        super().__init__(f"The request must contain the parameter {name}")


class MissingAction(Ec2Error):
    code = "MissingAction"

    def __init__(self) -> None:
        super().__init__("The request must contain the parameter Action")


class InvalidParameter(Ec2Error):
    code = "InvalidParameter"


class InvalidParameterValue(Ec2Error):
    code = "InvalidParameterValue"


class InvalidParameterCombination(Ec2Error):
    code = "InvalidParameterCombination"


class InvalidParameterDependency(Ec2Error):
    code = "InvalidParameterDependency"

    def __init__(self, parameter: str, requires: str) -> None:
        super().__init__(f"The parameter {parameter} requires the parameter {requires} to be set.")


class IdempotentParameterMismatch(Ec2Error):
    code = "IdempotentParameterMismatch"


class InvalidFilter(Ec2Error):
    code = "InvalidFilter"

    def __init__(self, name: str) -> None:
        super().__init__(f"The filter '{name}' is invalid")


class InvalidPaginationToken(Ec2Error):
    code = "InvalidPaginationToken"

    def __init__(self, token: str) -> None:
        super().__init__(f"Invalid pagination token: {token}")


class InvalidVolumeNotFound(Ec2Error):
    code = "InvalidVolume.NotFound"

    def __init__(self, volume_id: str) -> None:
        super().__init__(f"The volume '{volume_id}' does not exist.")


class InvalidVolumeIdMalformed(Ec2Error):
    code = "InvalidVolumeID.Malformed"

    def __init__(self, volume_id: str) -> None:
        super().__init__(f'Invalid id: "{volume_id}" (expecting "vol-...")')


class InvalidVolumeZoneMismatch(Ec2Error):
    code = "InvalidVolume.ZoneMismatch"

    def __init__(self, volume_id: str, volume_zone: str, instance_id: str, instance_zone: str):
        super().__init__(
            f"The volume '{volume_id}' is not in the same availability zone as instance "
            f"'{instance_id}' (volume: {volume_zone}, instance: {instance_zone})"
        )


class InvalidVolumeModificationNotFound(Ec2Error):
    code = "InvalidVolumeModification.NotFound"

    def __init__(self, volume_id: str) -> None:
        super().__init__(f"Modification for volume '{volume_id}' does not exist.")


class InvalidSnapshotNotFound(Ec2Error):
    code = "InvalidSnapshot.NotFound"

    def __init__(self, snapshot_id: str) -> None:
        super().__init__(f"The snapshot '{snapshot_id}' does not exist.")


class InvalidSnapshotIdMalformed(Ec2Error):
    code = "InvalidSnapshotID.Malformed"

    def __init__(self, snapshot_id: str) -> None:
        super().__init__(f'Invalid id: "{snapshot_id}" (expecting "snap-...")')


class InvalidInstanceIdNotFound(Ec2Error):
    code = "InvalidInstanceID.NotFound"

    def __init__(self, instance_id: str) -> None:
        super().__init__(f"The instance ID '{instance_id}' does not exist")


class InvalidInstanceIdMalformed(Ec2Error):
    code = "InvalidInstanceID.Malformed"

    def __init__(self, instance_id: str) -> None:
        super().__init__(f'Invalid id: "{instance_id}" (expecting "i-...")')


class InvalidAmiIdMalformed(Ec2Error):
    code = "InvalidAMIID.Malformed"

    def __init__(self, image_id: str) -> None:
        super().__init__(f'Invalid id: "{image_id}" (expecting "ami-...")')


class InvalidAmiIdNotFound(Ec2Error):
    code = "InvalidAMIID.NotFound"

    def __init__(self, image_id: str) -> None:
        super().__init__(f"The image id '[{image_id}]' does not exist")


class InvalidAmiNameDuplicate(Ec2Error):
    code = "InvalidAMIName.Duplicate"

    def __init__(self, name: str) -> None:
        super().__init__(f"AMI name {name} is already in use by an image of this account.")


class InvalidBlockDeviceMapping(Ec2Error):
    code = "InvalidBlockDeviceMapping"


class InvalidInstanceAttributeValue(Ec2Error):
    code = "InvalidInstanceAttributeValue"


class InvalidInstanceType(Ec2Error):
    code = "InvalidInstanceType"

    def __init__(self, instance_types: list[str]) -> None:
        super().__init__(
            f"The following supplied instance types do not exist: [{', '.join(instance_types)}]"
        )


class InvalidId(Ec2Error):
    code = "InvalidID"

    def __init__(self, resource_id: str) -> None:
        super().__init__(f"The ID '{resource_id}' is not valid")


class InvalidAttachmentNotFound(Ec2Error):
    code = "InvalidAttachment.NotFound"


class IncorrectState(Ec2Error):
    code = "IncorrectState"


class IncorrectInstanceState(Ec2Error):
    code = "IncorrectInstanceState"


class IncorrectModificationState(Ec2Error):
    code = "IncorrectModificationState"


class VolumeModificationRateExceeded(Ec2Error):
    code = "VolumeModificationRateExceeded"


class VolumeInUse(Ec2Error):
    code = "VolumeInUse"


class AttachmentLimitExceeded(Ec2Error):
    code = "AttachmentLimitExceeded"


class TagLimitExceeded(Ec2Error):
    code = "TagLimitExceeded"


class InvalidZoneNotFound(Ec2Error):
    code = "InvalidZone.NotFound"

    def __init__(self, zone: str) -> None:
        super().__init__(f"The zone '{zone}' does not exist.")


class SnapshotLocked(Ec2Error):
    code = "SnapshotLocked"


class OperationNotPermitted(Ec2Error):
    code = "OperationNotPermitted"


class InsufficientVolumeCapacity(Ec2Error):
    code = "InsufficientVolumeCapacity"


class DryRunOperation(Ec2Error):
    code = "DryRunOperation"
    http_status = 412

    def __init__(self) -> None:
        super().__init__("Request would have succeeded, but DryRun flag is set.")


class UnauthorizedOperation(Ec2Error):
    code = "UnauthorizedOperation"
    http_status = 403

    def __init__(self) -> None:
        super().__init__("You are not authorized to perform this operation.")


class AuthFailure(Ec2Error):
    """EC2's answer to a request signed for a region it does not have."""

    code = "AuthFailure"
    http_status = 401


class RequestEntityTooLarge(Ec2Error):
    code = "RequestEntityTooLarge"
    http_status = 413

    def __init__(self, limit: int | None) -> None:
        within = f"{limit} bytes" if limit else "what fakestor accepts"
        super().__init__(f"The request body is larger than {within}.")


class RequestHeaderFieldsTooLarge(Ec2Error):
    code = "RequestHeaderFieldsTooLarge"
    http_status = 431

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"The request line and headers are larger than {limit} bytes; send long "
            "parameter lists in a POST body instead of the query string."
        )


class MalformedHttpRequest(Ec2Error):
    code = "MalformedHttpRequestException"


class Unavailable(Ec2Error):
    code = "Unavailable"
    http_status = 503


class RequestLimitExceeded(Ec2Error):
    """Above the request rate of its action (`fakestor server --request-rate`)."""

    code = "RequestLimitExceeded"
    http_status = 503

    def __init__(self) -> None:
        super().__init__("Request limit exceeded.")
