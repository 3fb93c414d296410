"""MaxResults / NextToken paging over id-ordered results, as EC2 pages."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import TypeVar

from fakestor import errors

T = TypeVar("T")


def encode_token(last_key: str) -> str:
    return base64.urlsafe_b64encode(f"after:{last_key}".encode()).decode()


def decode_token(token: str) -> str:
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise errors.InvalidPaginationToken(token) from None
    if not text.startswith("after:"):
        raise errors.InvalidPaginationToken(token)
    return text.removeprefix("after:")


def check_max_results(
    max_results: int | None, low: int, high: int, *, with_ids: bool = False, ids_name: str = ""
) -> None:
    if max_results is None:
        return
    if with_ids:
        raise errors.InvalidParameterCombination(
            f"The parameter {ids_name} cannot be used with the parameter maxResults"
        )
    if not low <= max_results <= high:
        raise errors.InvalidParameterValue(
            f"Value ({max_results}) for parameter maxResults is invalid. "
            f"Expecting a value between {low} and {high}."
        )


def paginate(
    items: Sequence[T],
    key: Callable[[T], str],
    max_results: int | None,
    next_token: str | None,
) -> tuple[list[T], str | None]:
    """One page of `items` (sorted by `key`) and the token for the next, if any."""
    ordered = sorted(items, key=key)
    if next_token:
        after = decode_token(next_token)
        ordered = [item for item in ordered if key(item) > after]
    if max_results is None or len(ordered) <= max_results:
        return ordered, None
    page = ordered[:max_results]
    return page, encode_token(key(page[-1]))
