"""MaxResults / NextToken paging over id-ordered results, as EC2 pages."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import TypeVar

from fakestor import errors

T = TypeVar("T")


def encode_token(scope: str, last_key: str) -> str:
    """A token for the page after `last_key`, good only for the action `scope`."""
    return base64.urlsafe_b64encode(f"{scope}\0{last_key}".encode()).decode()


def decode_token(token: str, scope: str) -> str:
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise errors.InvalidPaginationToken(token) from None
    token_scope, separator, last_key = text.partition("\0")
    if not separator or token_scope != scope:
        raise errors.InvalidPaginationToken(token)
    return last_key


def check_max_results(
    max_results: int | None,
    low: int,
    high: int,
    *,
    with_ids: bool = False,
    ids_name: str = "",
    capped: bool = False,
) -> int | None:
    """The page size to use, or an EC2 error for a MaxResults the action refuses.

    `capped`: the action documents that a value above `high` returns `high` items
    (DescribeVolumes, DescribeSnapshots, DescribeVolumeStatus; the AWS CLI sends
    MaxResults=1000 to the first two by default).
    """
    if max_results is None:
        return None
    if with_ids:
        raise errors.InvalidParameterCombination(
            f"The parameter {ids_name} cannot be used with the parameter maxResults"
        )
    if capped and max_results > high:
        return high
    if not low <= max_results <= high:
        raise errors.InvalidParameterValue(
            f"Value ({max_results}) for parameter maxResults is invalid. "
            f"Expecting a value between {low} and {high}."
        )
    return max_results


def paginate(
    items: Sequence[T],
    key: Callable[[T], str],
    max_results: int | None,
    next_token: str | None,
    scope: str,
) -> tuple[list[T], str | None]:
    """One page of `items` (sorted by `key`) and the token for the next, if any."""
    ordered = sorted(items, key=key)
    if next_token:
        after = decode_token(next_token, scope)
        ordered = [item for item in ordered if key(item) > after]
    if max_results is None or len(ordered) <= max_results:
        return ordered, None
    page = ordered[:max_results]
    return page, encode_token(scope, key(page[-1]))
