"""failoverd: active/passive failover for a two-node web stack on a ZooKeeper lease."""

# The only place the version is written: pyproject.toml reads it from here (dynamic), and the
# daemon publishes it in its member record, so a checkout and an install cannot disagree.
__version__ = "0.2.0"
