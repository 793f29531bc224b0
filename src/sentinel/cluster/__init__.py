"""The cluster: brokers that replicate partitions with Raft (issue 8).

``peers`` parses ``--peers``; ``identity`` ties a data directory to one node of one
cluster; ``wire`` is the sans-IO codec of broker-to-broker frames; ``transport`` carries
them over asyncio streams (Raft envelopes one way, calls with replies).
"""
