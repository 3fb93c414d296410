"""The Recycle Bin actions: each turns parsed input (botocore member names) into a call on
the retention rules of the control plane and its result into the output shape's members."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fakestor.control import recycle_bin_rules as rules
from fakestor.control.context import Ebs
from fakestor.control.recycle_bin_rules import ResourceTag, Rule

Params = Mapping[str, Any]
Action = Callable[[Ebs, Params], dict[str, Any]]


def _resource_tags(items: Sequence[Mapping[str, str]] | None) -> list[ResourceTag] | None:
    if items is None:
        return None
    return [(item["ResourceTagKey"], item.get("ResourceTagValue")) for item in items]


def _tag_docs(pairs: Sequence[ResourceTag]) -> list[dict[str, str]]:
    docs = []
    for key, value in pairs:
        doc = {"ResourceTagKey": key}
        if value is not None:
            doc["ResourceTagValue"] = value
        docs.append(doc)
    return docs


def _days(period: Mapping[str, Any] | None) -> int | None:
    return None if period is None else int(period["RetentionPeriodValue"])


def _lock_configuration(days: int | None) -> dict[str, Any] | None:
    if days is None:
        return None
    return {"UnlockDelay": {"UnlockDelayValue": days, "UnlockDelayUnit": "DAYS"}}


def _rule_doc(rule: Rule, *members: str) -> dict[str, Any]:
    """The members of a rule that an output shape names (every one if none are given)."""
    doc: dict[str, Any] = {
        "Identifier": rule.identifier,
        "Description": rule.description,
        "ResourceType": rule.resource_type,
        "RetentionPeriod": {
            "RetentionPeriodValue": rule.retention_days,
            "RetentionPeriodUnit": "DAYS",
        },
        "ResourceTags": _tag_docs(rule.resource_tags),
        "ExcludeResourceTags": _tag_docs(rule.exclude_tags) or None,
        "Status": rule.status,
        "LockConfiguration": (
            None
            if rule.lock_delay_days is None
            else {
                "UnlockDelay": {"UnlockDelayValue": rule.lock_delay_days, "UnlockDelayUnit": "DAYS"}
            }
        ),
        "LockState": rule.lock_state,
        "LockEndTime": rule.lock_end_time,
        "RuleArn": rule.arn,
    }
    return {key: doc[key] for key in members} if members else doc


_WITHOUT_LOCK_END = [
    "Identifier", "Description", "ResourceType", "RetentionPeriod", "ResourceTags",
    "ExcludeResourceTags", "Status", "LockConfiguration", "LockState", "RuleArn",
]  # fmt: skip


def create_rule(ebs: Ebs, params: Params) -> dict[str, Any]:
    lock = params.get("LockConfiguration")
    rule = rules.create_rule(
        ebs,
        params["ResourceType"],
        int(params["RetentionPeriod"]["RetentionPeriodValue"]),
        description=params.get("Description", ""),
        resource_tags=_resource_tags(params.get("ResourceTags")) or [],
        exclude_tags=_resource_tags(params.get("ExcludeResourceTags")) or [],
        lock_delay_days=None if lock is None else int(lock["UnlockDelay"]["UnlockDelayValue"]),
        tags={tag["Key"]: tag["Value"] for tag in params.get("Tags", [])},
    )
    tags = [{"Key": k, "Value": v} for k, v in rule.tags.items()]
    return {**_rule_doc(rule, *_WITHOUT_LOCK_END), "Tags": tags or None}


def get_rule(ebs: Ebs, params: Params) -> dict[str, Any]:
    return _rule_doc(rules.get_rule(ebs, params["Identifier"]))


def list_rules(ebs: Ebs, params: Params) -> dict[str, Any]:
    page = rules.list_rules(
        ebs,
        params["ResourceType"],
        resource_tags=_resource_tags(params.get("ResourceTags")) or [],
        exclude_tags=_resource_tags(params.get("ExcludeResourceTags")) or [],
        lock_state=params.get("LockState"),
        max_results=params.get("MaxResults"),
        next_token=params.get("NextToken"),
    )
    summaries = [
        _rule_doc(rule, "Identifier", "Description", "RetentionPeriod", "LockState", "RuleArn")
        for rule in page.rules
    ]
    return {"Rules": summaries, "NextToken": page.next_token}


def update_rule(ebs: Ebs, params: Params) -> dict[str, Any]:
    rule = rules.update_rule(
        ebs,
        params["Identifier"],
        rules.RuleChanges(
            retention_days=_days(params.get("RetentionPeriod")),
            description=params.get("Description"),
            resource_type=params.get("ResourceType"),
            resource_tags=_resource_tags(params.get("ResourceTags")),
            exclude_tags=_resource_tags(params.get("ExcludeResourceTags")),
        ),
    )
    doc = _rule_doc(rule)
    del doc["LockConfiguration"]  # not in UpdateRule's output shape
    return doc


def delete_rule(ebs: Ebs, params: Params) -> dict[str, Any]:
    rules.delete_rule(ebs, params["Identifier"])
    return {}


def lock_rule(ebs: Ebs, params: Params) -> dict[str, Any]:
    delay = params["LockConfiguration"]["UnlockDelay"]["UnlockDelayValue"]
    return _rule_doc(rules.lock_rule(ebs, params["Identifier"], int(delay)), *_WITHOUT_LOCK_END)


def unlock_rule(ebs: Ebs, params: Params) -> dict[str, Any]:
    return _rule_doc(rules.unlock_rule(ebs, params["Identifier"]))


def tag_resource(ebs: Ebs, params: Params) -> dict[str, Any]:
    tags = {tag["Key"]: tag["Value"] for tag in params["Tags"]}
    rules.tag_resource(ebs, params["ResourceArn"], tags)
    return {}


def untag_resource(ebs: Ebs, params: Params) -> dict[str, Any]:
    rules.untag_resource(ebs, params["ResourceArn"], params["TagKeys"])
    return {}


def list_tags_for_resource(ebs: Ebs, params: Params) -> dict[str, Any]:
    tags = rules.list_tags(ebs, params["ResourceArn"])
    return {"Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}


ACTIONS: dict[str, Action] = {
    "CreateRule": create_rule,
    "GetRule": get_rule,
    "ListRules": list_rules,
    "UpdateRule": update_rule,
    "DeleteRule": delete_rule,
    "LockRule": lock_rule,
    "UnlockRule": unlock_rule,
    "TagResource": tag_resource,
    "UntagResource": untag_resource,
    "ListTagsForResource": list_tags_for_resource,
}
