"""``sentinel-cli cluster``: the cluster's brokers and which one leads it.

    sentinel-cli cluster [-broker h1:9092,h2:9092,h3:9092] [-json]

One row per broker: its node id, gRPC address (what ``-broker`` takes), Kafka address,
and whether it is the controller's leader. Any
live broker of ``-broker`` answers; a single broker shows itself as controller.
"""

from __future__ import annotations

import click

from sentinel.cli.common import admin_client, broker_options
from sentinel.cli.output import Output
from sentinel.cli.tables import cluster_dict, cluster_view

__all__ = ["cluster"]


@click.command("cluster")
@broker_options
def cluster(broker: str, json_mode: bool) -> None:
    """Show the brokers of the cluster and which one is the controller (coordinator)."""
    out = Output(json_mode=json_mode)
    with admin_client(broker) as admin:
        found = admin.metadata()
    out.result(cluster_dict(found), cluster_view(found))
