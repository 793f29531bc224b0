"""The cluster: brokers replicating partitions with Raft."""
