"""The two-node lab in network namespaces (lab/lab, lab/cluster.py), end to end; needs root."""
