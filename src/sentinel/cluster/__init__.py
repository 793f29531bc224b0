"""The cluster: brokers that replicate partitions with Raft (issue 8).

``peers`` parses ``--peers``; ``identity`` ties a data directory to one node of one
cluster; ``wire`` is the sans-IO codec of broker-to-broker frames; ``transport`` carries
them over asyncio streams (Raft envelopes one way, calls with replies); ``records`` and
``metadata`` are the controller's state machine (KRaft's metadata log) and
``placement`` its replica placement; ``controller`` runs it over Raft group 0;
``offsets_topic`` is the format of ``__consumer_offsets`` and the group-to-partition
hash, ``group_coordination`` makes each group's coordinator the leader of its partition;
``node`` composes this broker's part of the cluster behind ``BrokerService``;
``local`` starts a cluster of brokers on one machine.
"""
