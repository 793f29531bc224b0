"""The Kafka door: a listener speaking the Apache Kafka wire protocol
(``sentinel.protocol.kafka`` decodes and encodes; this package calls ``BrokerService``)."""
