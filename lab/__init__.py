"""The lab: real servers (ZooKeeper, and later the two-node cluster) for tests, demo and bench."""
