"""ListMetrics, GetMetricStatistics and GetMetricData over the AWS/EBS datapoints.

Only namespace AWS/EBS with the one dimension EBS publishes (VolumeId) has data; any
other namespace or dimension set is served as CloudWatch serves a metric nobody
published: no metrics, no datapoints. Limits and messages follow the CloudWatch API
reference (1,440 datapoints per GetMetricStatistics, periods of 1, 5, 10, 30 or a
multiple of 60 seconds, 500 metrics per ListMetrics page).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fakestor.cloudwatch.wire import (
    InvalidNextToken,
    InvalidParameterCombination,
    InvalidParameterValue,
)
from fakestor.control.context import Ebs
from fakestor.control.volume_metrics import NAMESPACE, UNITS

MAX_STATISTICS_DATAPOINTS = 1440
MAX_METRICS_PAGE = 500
DEFAULT_MAX_DATAPOINTS = 100_800
STATISTICS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")
HIGH_RESOLUTION_PERIODS = (1, 5, 10, 30)
RECENTLY_ACTIVE = timedelta(hours=3)
LIST_WINDOW = timedelta(days=14)  # ListMetrics lists metrics with data in the last 2 weeks


@dataclass(frozen=True)
class Bucket:
    start: int
    sample_count: float
    sum: float
    minimum: float
    maximum: float

    def statistic(self, name: str) -> float:
        if name == "SampleCount":
            return self.sample_count
        if name == "Sum":
            return self.sum
        if name == "Minimum":
            return self.minimum
        if name == "Maximum":
            return self.maximum
        return self.sum / self.sample_count if self.sample_count else 0.0


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _volume_of(namespace: str, dimensions: list[Mapping[str, str]]) -> str | None:
    """The volume a metric names, if it is one EBS publishes."""
    if namespace != NAMESPACE or len(dimensions) != 1 or dimensions[0].get("Name") != "VolumeId":
        return None
    return dimensions[0].get("Value")


def _check_period(period: int) -> None:
    if period not in HIGH_RESOLUTION_PERIODS and period % 60:
        raise InvalidParameterValue(
            "The parameter Period must be 1, 5, 10, 30 or a multiple of 60."
        )


def _check_window(start: datetime, end: datetime) -> None:
    if start >= end:
        raise InvalidParameterValue(
            "The parameter StartTime must be less than the parameter EndTime."
        )


def _buckets(
    ebs: Ebs, volume_id: str, metric: str, start: datetime, end: datetime, period: int,
    unit: str | None,
) -> list[Bucket]:  # fmt: skip
    if unit is not None and unit != UNITS.get(metric):
        return []
    first, last = _epoch(start), _epoch(end)
    with ebs.store.transaction() as db:
        rows = db.execute(
            "SELECT (timestamp - ?) / ? AS slot, SUM(sample_count) AS sample_count, "
            "SUM(sum) AS sum, MIN(minimum) AS minimum, MAX(maximum) AS maximum FROM volume_metrics "
            "WHERE volume_id = ? AND metric = ? AND timestamp >= ? AND timestamp < ? "
            "GROUP BY slot ORDER BY slot",
            (first, period, volume_id, metric, first, last),
        ).fetchall()
    return [
        Bucket(
            first + row["slot"] * period,
            row["sample_count"],
            row["sum"],
            row["minimum"],
            row["maximum"],
        )
        for row in rows
    ]


def get_metric_statistics(ebs: Ebs, request: dict[str, Any]) -> dict[str, Any]:
    start, end, period = request["StartTime"], request["EndTime"], request["Period"]
    statistics = request.get("Statistics") or []
    if not statistics and not request.get("ExtendedStatistics"):
        raise InvalidParameterCombination("Must specify either Statistics or ExtendedStatistics")
    if statistics and request.get("ExtendedStatistics"):
        raise InvalidParameterCombination(
            "Cannot specify both Statistics and ExtendedStatistics in one request"
        )
    if request.get("ExtendedStatistics"):
        # Percentiles need every sample; fakestor keeps one statistic set per datapoint.
        raise InvalidParameterValue("fakestor does not compute ExtendedStatistics (percentiles).")
    _check_window(start, end)
    _check_period(period)
    requested = -(-(_epoch(end) - _epoch(start)) // period)
    if requested > MAX_STATISTICS_DATAPOINTS:
        raise InvalidParameterCombination(
            f"You have requested up to {requested:,} datapoints, which exceeds the limit of "
            f"{MAX_STATISTICS_DATAPOINTS:,}. You may reduce the datapoints requested by "
            "increasing Period, or decreasing the time range."
        )
    metric = request["MetricName"]
    volume_id = _volume_of(request["Namespace"], request.get("Dimensions") or [])
    buckets = (
        _buckets(ebs, volume_id, metric, start, end, period, request.get("Unit"))
        if volume_id
        else []
    )
    datapoints = []
    for bucket in buckets:
        point: dict[str, Any] = {
            "Timestamp": datetime.fromtimestamp(bucket.start, UTC),
            "Unit": UNITS.get(metric, "None"),
        }
        for name in statistics:
            point[name] = bucket.statistic(name)
        datapoints.append(point)
    return {"Label": metric, "Datapoints": datapoints}


def _token(payload: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


def _untoken(token: str, kind: str) -> dict[str, Any]:
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, UnicodeDecodeError):
        raise InvalidNextToken("The NextToken is not valid.") from None
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        raise InvalidNextToken("The NextToken is not valid.")
    return payload


def list_metrics(ebs: Ebs, request: dict[str, Any]) -> dict[str, Any]:
    namespace = request.get("Namespace")
    if namespace not in (None, NAMESPACE):
        return {"Metrics": []}
    since = datetime.now(UTC) - (
        RECENTLY_ACTIVE if request.get("RecentlyActive") == "PT3H" else LIST_WINDOW
    )
    with ebs.store.transaction() as db:
        rows = db.execute(
            "SELECT DISTINCT volume_id, metric FROM volume_metrics WHERE timestamp >= ? "
            "ORDER BY volume_id, metric",
            (_epoch(since),),
        ).fetchall()
    wanted_name = request.get("MetricName")
    filters = request.get("Dimensions") or []
    metrics = []
    for row in rows:
        if wanted_name is not None and row["metric"] != wanted_name:
            continue
        if not all(_dimension_matches(f, row["volume_id"]) for f in filters):
            continue
        metrics.append(
            {
                "Namespace": NAMESPACE,
                "MetricName": row["metric"],
                "Dimensions": [{"Name": "VolumeId", "Value": row["volume_id"]}],
            }
        )
    offset = _untoken(request["NextToken"], "list")["offset"] if request.get("NextToken") else 0
    page = metrics[offset : offset + MAX_METRICS_PAGE]
    result: dict[str, Any] = {"Metrics": page}
    if offset + MAX_METRICS_PAGE < len(metrics):
        result["NextToken"] = _token({"kind": "list", "offset": offset + MAX_METRICS_PAGE})
    return result


def _dimension_matches(dimension_filter: Mapping[str, str], volume_id: str) -> bool:
    if dimension_filter.get("Name") != "VolumeId":
        return False
    value = dimension_filter.get("Value")
    return value is None or value == volume_id


_ID = re.compile(r"^[a-z][a-zA-Z0-9_]*$")


def get_metric_data(ebs: Ebs, request: dict[str, Any]) -> dict[str, Any]:
    start, end = request["StartTime"], request["EndTime"]
    _check_window(start, end)
    queries = request["MetricDataQueries"]
    if len(queries) > 500:
        raise InvalidParameterValue("The collection MetricDataQueries must not exceed 500 items.")
    ids = [query["Id"] for query in queries]
    for query_id in ids:
        if not _ID.match(query_id):
            raise InvalidParameterValue(
                f"The value {query_id} for parameter MetricDataQueries.member.Id is not valid: "
                "it must start with a lowercase letter and hold only letters, digits and _."
            )
    if len(set(ids)) != len(ids):
        raise InvalidParameterValue("The values of MetricDataQueries.member.Id must be unique.")
    descending = request.get("ScanBy", "TimestampDescending") == "TimestampDescending"
    results = []
    for query in queries:
        if "Expression" in query:
            raise InvalidParameterValue(
                "fakestor does not evaluate metric math: give each query a MetricStat."
            )
        stat = query.get("MetricStat")
        if stat is None:
            raise InvalidParameterCombination(
                "Exactly one of MetricStat and Expression must be specified for each query."
            )
        if query.get("ReturnData") is False:
            continue
        if stat["Stat"] not in STATISTICS:
            raise InvalidParameterValue(
                f"The value {stat['Stat']} for parameter MetricDataQueries.member.MetricStat.Stat "
                f"is not supported by fakestor; use one of {', '.join(STATISTICS)}."
            )
        _check_period(stat["Period"])
        metric = stat["Metric"]
        volume_id = _volume_of(metric.get("Namespace", ""), metric.get("Dimensions") or [])
        buckets = (
            _buckets(
                ebs,
                volume_id,
                metric.get("MetricName", ""),
                start,
                end,
                stat["Period"],
                stat.get("Unit"),
            )
            if volume_id
            else []
        )
        if descending:
            buckets.reverse()
        results.append(
            {
                "Id": query["Id"],
                "Label": query.get("Label") or metric.get("MetricName", ""),
                "Timestamps": [datetime.fromtimestamp(b.start, UTC) for b in buckets],
                "Values": [b.statistic(stat["Stat"]) for b in buckets],
                "StatusCode": "Complete",
            }
        )
    return _page_metric_data(results, request)


def _page_metric_data(results: list[dict[str, Any]], request: dict[str, Any]) -> dict[str, Any]:
    """MaxDatapoints across all results per call; NextToken for the rest."""
    limit = request.get("MaxDatapoints") or DEFAULT_MAX_DATAPOINTS
    skip = _untoken(request["NextToken"], "data")["skip"] if request.get("NextToken") else {}
    budget = limit
    paged, more = [], False
    for result in results:
        first = skip.get(result["Id"], 0)
        take = max(0, min(budget, len(result["Values"]) - first))
        paged.append(
            {
                **result,
                "Timestamps": result["Timestamps"][first : first + take],
                "Values": result["Values"][first : first + take],
                "StatusCode": "Complete"
                if first + take >= len(result["Values"])
                else "PartialData",
            }
        )
        skip[result["Id"]] = first + take
        budget -= take
        more = more or first + take < len(result["Values"])
    answer: dict[str, Any] = {"MetricDataResults": paged, "Messages": []}
    if more:
        answer["NextToken"] = _token({"kind": "data", "skip": skip})
    return answer


ACTIONS: dict[str, Callable[[Ebs, dict[str, Any]], dict[str, Any]]] = {
    "ListMetrics": list_metrics,
    "GetMetricStatistics": get_metric_statistics,
    "GetMetricData": get_metric_data,
}
