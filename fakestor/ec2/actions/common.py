"""What every EC2 action module shares: the registry, and readers of filters, tags,
DryRun and paging parameters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fakestor import errors
from fakestor.control.context import Ebs
from fakestor.control.filters import Filter
from fakestor.control.idempotency import ClientToken, fingerprint
from fakestor.control.requests import (
    TagSpec,
)
from fakestor.ec2 import paging

Params = dict[str, Any]
Result = dict[str, Any]
Handler = Callable[[Ebs, Params], Result]

ACTIONS: dict[str, Handler] = {}


def action(handler: Handler) -> Handler:
    """Register `handler` under its EC2 action name (snake_case -> PascalCase)."""
    name = "".join(part.capitalize() for part in handler.__name__.split("_"))
    ACTIONS[_IRREGULAR_NAMES.get(name, name)] = handler
    return handler


_IRREGULAR_NAMES = {"EnableVolumeIo": "EnableVolumeIO"}


def filters_of(params: Params) -> list[Filter]:
    filters = []
    for item in params.get("Filters", []):
        if "Name" not in item:
            raise errors.MissingParameter("Filter.N.Name")
        filters.append(Filter(item["Name"], item.get("Values", [])))
    return filters


def tag_specs_of(params: Params) -> list[TagSpec]:
    specs = []
    for spec in params.get("TagSpecifications", []):
        if "ResourceType" not in spec:
            raise errors.MissingParameter("TagSpecification.N.ResourceType")
        specs.append(TagSpec(spec["ResourceType"], tags_of(spec.get("Tags", []))))
    return specs


def tags_of(items: Sequence[Params]) -> dict[str, str]:
    found = {}
    for item in items:
        if "Key" not in item:
            raise errors.MissingParameter("Tag.N.Key")
        found[item["Key"]] = item.get("Value", "")
    return found


def dry_run_of(params: Params) -> bool:
    return bool(params.get("DryRun", False))


def client_token_of(params: Params, *, zone_params: Sequence[str] = ()) -> ClientToken | None:
    """The request's ClientToken, with a fingerprint of every other parameter but DryRun and
    those naming the zone (a zonal token is scoped by its zone, however it is named)."""
    value = params.get("ClientToken")
    if not value:
        return None
    ignored = {"ClientToken", "DryRun", *zone_params}
    return ClientToken(value, fingerprint({k: v for k, v in params.items() if k not in ignored}))


def check_paging(
    scope: str,
    params: Params,
    low: int,
    high: int,
    ids_param: str | None = None,
    *,
    capped: bool = False,
) -> int | None:
    """Validate MaxResults and NextToken before any work, as EC2 does; the page size."""
    page_size = paging.check_max_results(
        params.get("MaxResults"),
        low,
        high,
        with_ids=bool(ids_param and params.get(ids_param)),
        ids_name=ids_param or "",
        capped=capped,
    )
    if params.get("NextToken"):
        paging.decode_token(params["NextToken"], scope)
    return page_size


def page_of(
    scope: str,
    params: Params,
    page_size: int | None,
    items: Sequence[Any],
    key: Callable[[Any], str],
) -> tuple[list[Any], str | None]:
    return paging.paginate(items, key, page_size, params.get("NextToken"), scope)
