"""Raft replication as a sans-IO state machine (modelled on etcd-io/raft).

``RaftCore`` takes messages (``step``), clock ticks (``tick``) and proposals
(``propose``) and returns a ``Ready``: entries and hard state to persist, messages to
send, committed entries to apply. The driver persists, then sends, then applies, then
calls ``advance``. No time, randomness or IO inside: ticks come from outside and the
random source is injected.

Modules: ``messages`` (the wire values), ``log`` (what the core needs from storage and
an in-memory implementation), ``quorum`` (majority arithmetic), ``progress`` (the
leader's view of each follower), ``state`` (roles, the transition table, hard state,
``Ready``), ``core`` (the node), ``leader`` (the leader's replication and commit).
Drivers and storage: ``node`` (one group), ``multi`` + ``multi_driver`` (every group of
a broker, one loop), ``partition_log_adapter``, ``hard_state_file`` (one group) and
``hard_state_store`` (every group of a broker in one engine).
"""
