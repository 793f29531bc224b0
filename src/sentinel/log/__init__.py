"""The partition log: a partition's batches on its own LSM engine (see ``partition_log``)."""
