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
# How long a volume the plugin has just looked up, created, attached or detached answers
# Get without asking EBS. Docker asks Get several times per command (before Create, twice
# before Mount, before Unmount, twice before Remove), each within a few hundred ms of the
# plugin's last call. The EC2 API is itself only eventually consistent (AWS's
# "Eventual consistency in the Amazon EC2 API"), so a second-old answer is as good as
# a new one; a volume deleted elsewhere reads as gone at most this long after.
FRESH_FOR = 1.0


def api_error(failure: ClientError | BotoCoreError, doing: str) -> PluginError:
    if isinstance(failure, ClientError):
        error = failure.response.get("Error", {})
        return PluginError(f"{doing}: EBS said {error.get('Code')}: {error.get('Message')}")
    return PluginError(f"{doing}: cannot reach the EBS endpoint ({failure})")


class _AttachedMeanwhile(Exception):
    """AttachVolume found the volume attached already (VolumeInUse)."""

    def __init__(self, failure: ClientError) -> None:
        super().__init__(str(failure))
        self.failure = failure


class InstanceVolumes:
    """The EC2 calls the plugin makes, on behalf of this instance."""

    def __init__(self, ec2: Any, identity: Identity) -> None:
        self.ec2 = ec2
        self.identity = identity
        # Choosing a device name and attaching is one step per instance.
        self._attach_lock = threading.Lock()
        # Device names in use here as last seen (None: not yet asked); a guess that EBS
        # corrects with "already in use", after which the names are asked for again.
        self._taken: set[str] | None = None
        self._seen: dict[str, tuple[float, dict[str, Any]]] = {}
        self._seen_lock = threading.Lock()

    # ---- what the plugin saw last -----------------------------------------------

    def _remember(self, name: str, volume: dict[str, Any] | None) -> None:
        with self._seen_lock:
            if volume is None or volume["State"] in GONE:
                self._seen.pop(name, None)
            else:
                self._seen[name] = (time.monotonic(), volume)

    def recent(self, name: str) -> dict[str, Any] | None:
        """The volume as the plugin saw it within FRESH_FOR seconds, if it did."""
        with self._seen_lock:
            seen = self._seen.get(name)
        if seen is None or time.monotonic() - seen[0] > FRESH_FOR:
            return None
        return seen[1]

    def forget(self, name: str) -> None:
        self._remember(name, None)

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
            self.forget(name)
            ids = ", ".join(v["VolumeId"] for v in volumes)
            raise PluginError(
                f"several EBS volumes are tagged Name={name} ({ids}); rename or delete all but one"
            )
        found = volumes[0] if volumes else None
        self._remember(name, found)
        return found

    def require(self, name: str, recent: bool = False) -> dict[str, Any]:
        """The volume tagged Name=`name`; with `recent`, as seen within FRESH_FOR if it was."""
        volume = (recent and self.recent(name)) or self.find(name)
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

    def _described(self, volume_id: str) -> dict[str, Any] | None:
        """The volume, or None once DescribeVolumes no longer knows it."""
        try:
            return self.describe(volume_id)
        except ClientError as failure:
            if failure.response.get("Error", {}).get("Code") == "InvalidVolume.NotFound":
                return None
            raise

    # ---- changes --------------------------------------------------------------------

    def create(self, name: str, request: Mapping[str, Any]) -> str:
        """CreateVolume, then wait until it is available; the volume id."""
        try:
            volume_id: str = self.ec2.create_volume(**request)["VolumeId"]
        except (ClientError, BotoCoreError) as failure:
            raise api_error(failure, f"cannot create volume {name}") from None

        # As botocore's volume_available waiter: done when available, failed once deleted.
        def settled() -> dict[str, Any] | None:
            volume = self._described(volume_id) or {"State": "deleted"}
            return volume if volume["State"] in ("available", *GONE) else None

        volume = self.wait(f"{volume_id} to become available", settled)
        if volume["State"] != "available":
            raise PluginError(
                f"volume {name} ({volume_id}) is {volume['State']} instead of available"
            )
        self._remember(name, volume)
        return volume_id

    def delete(self, name: str, volume_id: str) -> None:
        """DeleteVolume, without waiting for `deleted`.

        Once EBS accepts the delete the volume is `deleting`, which every lookup here
        treats as gone: Get, List and a new Create of the name see no volume, all that
        Docker's Remove promises. Waiting for `deleted` would add round trips that
        nothing Docker does can observe; EBS finishes the delete on its own.
        """
        self.forget(name)
        try:
            self.ec2.delete_volume(VolumeId=volume_id)
        except ClientError as failure:
            if failure.response.get("Error", {}).get("Code") == "InvalidVolume.NotFound":
                return  # deleted meanwhile, by someone else
            raise api_error(failure, f"cannot delete volume {name}") from None
        except BotoCoreError as failure:
            raise api_error(failure, f"cannot delete volume {name}") from None

    def attach(self, name: str, volume: Mapping[str, Any], looked_again: bool = False) -> str:
        """Attach the volume here (if it is not yet) and return its block device.

        `volume` may be a moment old (FRESH_FOR): if EBS finds it attached meanwhile,
        it is looked up once more, for the checks below to say by whom.
        """
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
            try:
                device_name = self._attach_new(name, volume_id)
            except _AttachedMeanwhile as failure:
                if looked_again:
                    raise api_error(failure.failure, f"cannot attach volume {name}") from None
                try:
                    now = self.describe(volume_id)
                except (ClientError, BotoCoreError) as lookup:
                    raise api_error(lookup, f"cannot look up volume {name}") from None
                self._remember(name, now)
                return self.attach(name, now, looked_again=True)

        def attached() -> dict[str, Any] | None:
            now = self.describe(volume_id)
            done = any(
                a["InstanceId"] == here and a["State"] == "attached" for a in now["Attachments"]
            )
            return now if done else None

        self._remember(name, self.wait(f"{volume_id} to attach", attached))
        try:
            return host.find_device(volume_id, device_name)
        except host.HostError as failure:
            raise PluginError(str(failure)) from None

    def _attach_new(self, name: str, volume_id: str) -> str:
        """AttachVolume under the first free device name; the name.

        The names in use are asked for once and then kept: EBS refuses a name in use,
        and only then are they asked for again.
        """
        here = self.identity.instance_id
        with self._attach_lock:
            asked = self._taken is None
            taken = self._names_in_use(name) if self._taken is None else self._taken
            self._taken = taken
            while True:
                device_name = next(
                    (d for d in DEVICE_NAMES if canonical_device(d) not in taken), None
                )
                if device_name is None:
                    if asked:
                        raise PluginError(
                            f"no free device name on {here} for {name}; detach a volume first"
                        )
                    taken = self._taken = self._names_in_use(name)
                    asked = True
                    continue
                slot = canonical_device(device_name)
                try:
                    self.ec2.attach_volume(VolumeId=volume_id, InstanceId=here, Device=device_name)
                except ClientError as failure:
                    error = failure.response.get("Error", {})
                    if error.get("Code") == "VolumeInUse":
                        raise _AttachedMeanwhile(failure) from None
                    if "already in use" not in error.get("Message", ""):
                        raise api_error(failure, f"cannot attach volume {name}") from None
                    taken.add(slot)
                    if not asked:  # the names kept are out of date: ask again
                        taken = self._taken = self._names_in_use(name) | {slot}
                        asked = True
                    continue  # taken by someone else meanwhile: try the next name
                except BotoCoreError as failure:
                    raise api_error(failure, f"cannot attach volume {name}") from None
                taken.add(slot)
                return device_name

    def _names_in_use(self, name: str) -> set[str]:
        """The device names of every attachment to this instance, as EBS lists them."""
        here = self.identity.instance_id
        try:
            volumes = self.ec2.describe_volumes(
                Filters=[{"Name": "attachment.instance-id", "Values": [here]}]
            )["Volumes"]
        except (ClientError, BotoCoreError) as failure:
            raise api_error(failure, f"cannot attach volume {name}") from None
        return {
            canonical_device(a["Device"])
            for v in volumes
            for a in v["Attachments"]
            if a["InstanceId"] == here
        }

    def detach(self, name: str, volume_id: str) -> None:
        """Detach the volume from this instance (if attached here) and wait until it is.

        DetachVolume is asked straight away: EBS itself says when the volume is not
        attached here (or no longer exists), which saves a lookup before every detach.
        """
        here = self.identity.instance_id
        self.forget(name)
        try:
            detaching = self.ec2.detach_volume(VolumeId=volume_id, InstanceId=here)
        except ClientError as failure:
            code = failure.response.get("Error", {}).get("Code")
            if code in ("InvalidAttachment.NotFound", "InvalidVolume.NotFound"):
                return  # not attached here, or deleted meanwhile: nothing to detach
            if code != "IncorrectState":  # already detaching: wait for it below
                raise api_error(failure, f"cannot detach volume {name}") from None
        except BotoCoreError as failure:
            raise api_error(failure, f"cannot detach volume {name}") from None
        else:
            with self._attach_lock:
                if self._taken is not None:
                    self._taken.discard(canonical_device(detaching["Device"]))

        def detached() -> dict[str, Any] | None:
            now = self._described(volume_id) or {"State": "deleted", "Attachments": []}
            return None if any(a["InstanceId"] == here for a in now["Attachments"]) else now

        self._remember(name, self.wait(f"{volume_id} to detach", detached))
