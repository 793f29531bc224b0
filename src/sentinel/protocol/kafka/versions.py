"""The one set of API versions Sentinel advertises (ApiVersions), and nothing beyond it.

Every range here is one the codec implements and the tests round-trip; the set is
what confluent-kafka 2.x (librdkafka), kafka-python 3.0 and aiokafka 0.14 negotiate.
librdkafka uses the v2 record-batch format only when the broker advertises Produce 3+
*and* Fetch 4+ together, which this table does (checked at import).

=================  ===  ========    =================  ===  ========
API                key  versions    API                key  versions
=================  ===  ========    =================  ===  ========
Produce              0  3-9         LeaveGroup          13  0-4
Fetch                1  4-11        SyncGroup           14  0-3
ListOffsets          2  1-7         DescribeGroups      15  0-5
Metadata             3  1-12        ListGroups          16  0-1
OffsetCommit         8  2-8         ApiVersions         18  0-4
OffsetFetch          9  1-8         CreateTopics        19  2-4
FindCoordinator     10  0-2         DeleteTopics        20  1-4
JoinGroup           11  0-5         InitProducerId      22  0-4
Heartbeat           12  0-3         DescribeConfigs     32  1
DeleteRecords       21  0-2         CreatePartitions    37  0-1
AlterConfigs        33  0-2         IncrementalAlter... 44  0-1
AlterPartitionR...  45  0           ListPartitionRe...  46  0
OffsetForLeader...  23  2-4         DeleteGroups        42  0-2
DescribeCluster     60  0-1         OffsetDelete        47  0
=================  ===  ========    =================  ===  ========
"""

from __future__ import annotations

from sentinel.protocol.kafka.messages import REQUESTS, RESPONSES
from sentinel.protocol.kafka.messages.api_versions import ApiVersion, ApiVersionsResponse

__all__ = ["SUPPORTED", "UNSUPPORTED_VERSION", "api_versions_response", "supports"]

UNSUPPORTED_VERSION = 35
"""Kafka's error code for an API key or version the broker does not speak."""

SUPPORTED: dict[int, tuple[int, int]] = {
    key: (message.lo, message.hi) for key, message in sorted(REQUESTS.items())
}

for _key, (_lo, _hi) in SUPPORTED.items():
    _resp = RESPONSES[_key]
    if (_resp.lo, _resp.hi) != (_lo, _hi):
        raise AssertionError(f"api {_key}: request and response versions differ")
if SUPPORTED[0][0] < 3 or SUPPORTED[1][0] < 4:
    raise AssertionError("librdkafka needs Produce 3+ and Fetch 4+ advertised together")


def supports(api_key: int, api_version: int) -> bool:
    """Whether we decode and answer ``api_key`` at ``api_version``."""
    bounds = SUPPORTED.get(api_key)
    return bounds is not None and bounds[0] <= api_version <= bounds[1]


def api_versions_response(error_code: int = 0, throttle_time_ms: int = 0) -> ApiVersionsResponse:
    """The ApiVersions answer: every supported key with its version range."""
    return ApiVersionsResponse(
        error_code=error_code,
        api_keys=tuple(ApiVersion(api_key=k, min_version=lo, max_version=hi)
                       for k, (lo, hi) in SUPPORTED.items()),
        throttle_time_ms=throttle_time_ms,
    )
