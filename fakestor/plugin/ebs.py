"""EBS as this instance sees it: volumes by their Name tag, attached and detached with
free device names, each call's failure turned into a PluginError a Docker user can act on."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from fakestor.device_names import canonical_device
from fakestor.plugin import host
from fakestor.plugin.imds import Identity
from fakestor.plugin.options import NAME_TAG, PluginError

log = logging.getLogger(__name__)

DEVICE_NAMES = [f"/dev/sd{letter}" for letter in "fghijklmnopqrstuvwxyz"]
WAIT_TIMEOUT = 120.0
# Polls start this soon and back off: a volume is usually ready within milliseconds,
# and a fixed 100-200 ms sleep was most of a `docker run`'s extra time.
FIRST_POLL = 0.005
LAST_POLL = 0.25
GONE = ("deleting", "deleted")


def api_error(failure: ClientError | BotoCoreError, doing: str) -> PluginError:
    if isinstance(failure, ClientError):
        error = failure.response.get("Error", {})
        return PluginError(f"{doing}: EBS said {error.get('Code')}: {error.get('Message')}")
    return PluginError(f"{doing}: cannot reach the EBS endpoint ({failure})")


class InstanceVolumes:
    """The EC2 calls the plugin makes, on behalf of this instance."""

    def __init__(self, ec2: Any, identity: Identity) -> None:
        self.ec2 = ec2
        self.identity = identity
        # Choosing a device name and attaching is one step per instance.
        self._attach_lock = threading.Lock()

    # ---- lookups ----------------------------------------------------------------

    def find(self, name: str) -> dict[str, Any] | None:
        """The EBS volume tagged Name=`name`, if there is one."""
        try:
            volumes = self.ec2.describe_volumes(
                Filters=[{"Name": f"tag:{NAME_TAG}", "Values": [name]}]
            )["Volumes"]
        except (ClientError, BotoCoreError) as failure:
            raise api_error(failure, f"cannot look up volume {name}") from None
        volumes = [v for v in volumes if v["State"] not in GONE]
        if len(volumes) > 1:
            ids = ", ".join(v["VolumeId"] for v in volumes)
            raise PluginError(
                f"several EBS volumes are tagged Name={name} ({ids}); rename or delete all but one"
            )
        return volumes[0] if volumes else None

    def require(self, name: str) -> dict[str, Any]:
        volume = self.find(name)
        if volume is None:
            raise PluginError(
                f"no EBS volume is tagged Name={name}; create it with docker volume create "
                f"-d <this driver> {name}"
            )
        return volume

    def named(self) -> list[dict[str, Any]]:
        """Every live volume with a Name tag."""
        try:
            volumes: list[dict[str, Any]] = self.ec2.describe_volumes(
                Filters=[{"Name": "tag-key", "Values": [NAME_TAG]}]
            )["Volumes"]
        except (ClientError, BotoCoreError) as failure:
            raise api_error(failure, "cannot list volumes") from None
        return [v for v in volumes if v["State"] not in GONE]

    def describe(self, volume_id: str) -> dict[str, Any]:
        volume: dict[str, Any] = self.ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
        return volume

    # ---- waiting ------------------------------------------------------------------

    def wait(self, what: str, check: Callable[[], Any], timeout: float = WAIT_TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        delay = FIRST_POLL
        while True:
            try:
                result = check()
            except (ClientError, BotoCoreError) as failure:
                raise api_error(failure, f"while waiting for {what}") from None
            if result:
                return result
            if time.monotonic() > deadline:
                raise PluginError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(delay)
            delay = min(delay * 2, LAST_POLL)

    def _state(self, volume_id: str) -> str:
        """The volume's state; `deleted` once DescribeVolumes no longer knows it."""
        try:
            return str(self.describe(volume_id)["State"])
        except ClientError as failure:
            if failure.response.get("Error", {}).get("Code") == "InvalidVolume.NotFound":
                return "deleted"
            raise

    # ---- changes --------------------------------------------------------------------

    def create(self, name: str, request: Mapping[str, Any]) -> str:
        """CreateVolume, then wait until it is available; the volume id."""
        try:
            volume_id: str = self.ec2.create_volume(**request)["VolumeId"]
        except (ClientError, BotoCoreError) as failure:
            raise api_error(failure, f"cannot create volume {name}") from None
        # As botocore's volume_available waiter: done when available, failed once deleted.
        state = self.wait(
            f"{volume_id} to become available",
            lambda: state if (state := self._state(volume_id)) in ("available", *GONE) else None,
        )
        if state != "available":
            raise PluginError(f"volume {name} ({volume_id}) is {state} instead of available")
        return volume_id

    def delete(self, name: str, volume_id: str) -> None:
        try:
            self.ec2.delete_volume(VolumeId=volume_id)
        except (ClientError, BotoCoreError) as failure:
            raise api_error(failure, f"cannot delete volume {name}") from None
        self.wait(f"{volume_id} to be deleted", lambda: self._state(volume_id) == "deleted")

    def attach(self, name: str, volume: Mapping[str, Any]) -> str:
        """Attach the volume here (if it is not yet) and return its block device."""
        volume_id = volume["VolumeId"]
        here = self.identity.instance_id
        if volume["AvailabilityZone"] != self.identity.zone:
            raise PluginError(
                f"volume {name} ({volume_id}) is in {volume['AvailabilityZone']}, this instance "
                f"in {self.identity.zone}; an EBS volume attaches only within its zone (restore "
                f"a snapshot of it here)"
            )
        ours = [a for a in volume["Attachments"] if a["InstanceId"] == here]
        others = [a for a in volume["Attachments"] if a["InstanceId"] != here]
        if others and not volume.get("MultiAttachEnabled"):
            raise PluginError(
                f"volume {name} ({volume_id}) is attached to instance {others[0]['InstanceId']}; "
                "stop the containers using it there (or detach it) first"
            )
        if ours:
            device_name = ours[0]["Device"]
            if ours[0]["State"] == "detaching":
                raise PluginError(f"volume {name} is still detaching; retry in a moment")
        else:
            device_name = self._attach_new(name, volume_id)
        self.wait(
            f"{volume_id} to attach",
            lambda: any(
                a["InstanceId"] == here and a["State"] == "attached"
                for a in self.describe(volume_id)["Attachments"]
            ),
        )
        try:
            return host.find_device(volume_id, device_name)
        except host.HostError as failure:
            raise PluginError(str(failure)) from None

    def _attach_new(self, name: str, volume_id: str) -> str:
        here = self.identity.instance_id
        with self._attach_lock:
            try:
                used = {
                    a["Device"]
                    for v in self.ec2.describe_volumes(
                        Filters=[{"Name": "attachment.instance-id", "Values": [here]}]
                    )["Volumes"]
                    for a in v["Attachments"]
                    if a["InstanceId"] == here
                }
            except (ClientError, BotoCoreError) as failure:
                raise api_error(failure, f"cannot attach volume {name}") from None
            taken = {canonical_device(u) for u in used}
            for device_name in DEVICE_NAMES:
                if canonical_device(device_name) in taken:
                    continue
                try:
                    self.ec2.attach_volume(VolumeId=volume_id, InstanceId=here, Device=device_name)
                except ClientError as failure:
                    message = failure.response.get("Error", {}).get("Message", "")
                    if "already in use" in message:
                        continue  # taken by someone else meanwhile: try the next name
                    raise api_error(failure, f"cannot attach volume {name}") from None
                except BotoCoreError as failure:
                    raise api_error(failure, f"cannot attach volume {name}") from None
                return device_name
        raise PluginError(f"no free device name on {here} for {name}; detach a volume first")

    def detach(self, name: str, volume_id: str) -> None:
        """Detach the volume from this instance (if attached here) and wait until it is."""
        here = self.identity.instance_id
        try:
            volume = self.describe(volume_id)
        except ClientError as failure:
            if failure.response.get("Error", {}).get("Code") != "InvalidVolume.NotFound":
                raise api_error(failure, f"cannot look up volume {name}") from None
            return  # deleted meanwhile: nothing to detach
        except BotoCoreError as failure:
            raise api_error(failure, f"cannot look up volume {name}") from None
        if not any(a["InstanceId"] == here for a in volume["Attachments"]):
            return
        try:
            self.ec2.detach_volume(VolumeId=volume_id, InstanceId=here)
        except ClientError as failure:
            if failure.response.get("Error", {}).get("Code") != "IncorrectState":
                raise api_error(failure, f"cannot detach volume {name}") from None
        self.wait(
            f"{volume_id} to detach",
            lambda: (
                not any(a["InstanceId"] == here for a in self.describe(volume_id)["Attachments"])
            ),
        )
