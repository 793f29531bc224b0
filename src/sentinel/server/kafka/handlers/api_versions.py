"""ApiVersions (18), v0-4: the versions this broker speaks.

Only API keys a handler serves are advertised, so a client never negotiates an API
that would be answered UNSUPPORTED_VERSION. A client asking an ApiVersions version we
do not speak gets the v0 answer with error 35 from the codec (``versions``).
"""

from __future__ import annotations

from sentinel.broker.service import BrokerService
from sentinel.protocol.kafka.messages.api_versions import ApiVersionsRequest, ApiVersionsResponse
from sentinel.protocol.kafka.versions import api_versions_response
from sentinel.server.kafka.handlers import HANDLERS, KafkaRequestContext, handles

API_VERSIONS = 18


@handles(API_VERSIONS)
async def api_versions(
    service: BrokerService, ctx: KafkaRequestContext, request: ApiVersionsRequest
) -> ApiVersionsResponse:
    full = api_versions_response()
    served = tuple(v for v in full.api_keys if v.api_key in HANDLERS)
    return ApiVersionsResponse(error_code=0, api_keys=served, throttle_time_ms=0)
