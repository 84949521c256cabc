"""failoverd: active/passive failover for a two-node web stack on a ZooKeeper lease."""

__version__ = "0.1.0"
