"""InitProducerId (22), v0-4: ids for idempotent producers (no transactions).

``BrokerService.init_producer_id`` hands out a new id (epoch 0), or the next epoch of
the id a producer names (v3+, KIP-360). A transactional id is refused: transactions are
not served.
"""

from __future__ import annotations

from sentinel.broker.service import BrokerService
from sentinel.protocol.kafka.messages.init_producer_id import (
    InitProducerIdRequest,
    InitProducerIdResponse,
)
from sentinel.server.kafka.handlers import KafkaRequestContext, handles

INIT_PRODUCER_ID = 22
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53


@handles(INIT_PRODUCER_ID)
async def init_producer_id(
    service: BrokerService, ctx: KafkaRequestContext, request: InitProducerIdRequest
) -> InitProducerIdResponse:
    if request.transactional_id is not None:
        return InitProducerIdResponse(
            error_code=TRANSACTIONAL_ID_AUTHORIZATION_FAILED, producer_id=-1, producer_epoch=-1
        )
    producer_id, epoch = service.init_producer_id(request.producer_id, request.producer_epoch)
    return InitProducerIdResponse(producer_id=producer_id, producer_epoch=epoch)
