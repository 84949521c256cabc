"""`failoverctl`: inspect and steer a cluster through ZooKeeper, from a node or an admin host.

``group`` holds the command group and what the commands share; ``show`` the commands that only
look (status, history, check-fencing); ``steer`` those that change the cluster (init, pause,
resume, promote, rejoin). Importing them registers their commands on the group.
"""

from failoverd.ctl import show, steer
from failoverd.ctl.group import failoverctl_main

__all__ = ["failoverctl_main", "show", "steer"]
