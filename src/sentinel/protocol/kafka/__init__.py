"""The Kafka wire protocol, sans IO: versioned schemas, one codec, a server connection.

Modules:

- ``schema``: field rows (name, type, versions, nullable versions, tag) as data.
- ``messages/``: one module per API, generated from Kafka's JSON message definitions
  (``tools/gen_kafka_messages.py``): value classes and request/response schemas.
- ``wire``: bounded primitive readers/writers; ``serde``: the one generic encoder and
  decoder; ``headers``: request headers v0-v2, response headers v0-v1.
- ``versions``: the ApiVersions table we advertise.
- ``events`` and ``connection``: bytes in, typed requests out, responses to bytes.

Why our own schema tables and not the PyPI package ``kio``: kio's dataclasses are
faithful to Kafka's JSON and it encodes what aiokafka reads, but its decoder is a
native (Rust) extension that trusts array lengths. Probed here with kio 0.6.5 on
Python 3.11, the five bytes ``ff ff ff ff 0f`` as a Metadata v12 request body (a
compact array of 2**32 - 2 topics) make it pre-allocate 34 GB and *abort the
process*; no Python exception to catch. A broker cannot put that in front of a
socket, and an adapter cannot bound what happens inside native code. So the schemas
are data generated from Kafka's definitions (taking only the schema facts), and the
decoder is ours: every length and count is checked against the bytes that remain
before anything is allocated, and malformed input raises ``DecodeError`` only.
Record batches inside Produce and Fetch stay opaque bytes here; validating and
decompressing them is ``sentinel.record``'s job.
"""
