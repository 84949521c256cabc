#!/usr/bin/env bash
# Vagrant provisioning, "up" of the ZooKeeper VM (every `vagrant up`/`reload`): the lab's
# standalone ZooKeeper, by lab/roles/zookeeper.sh, if it is not running yet.
#
# Environment (the Vagrantfile sets them):
#   LAB_DIR   its directory: zoo.cfg, zookeeper.log, zookeeper.pid, data/ (required)
#   ADDR      the address it listens on, on the cluster's network (required)
#   ZK_PORT   client port (default 2181)
#   REPO      the project, synced by Vagrant (default /vagrant)
# Session bounds as in the lab (lab/cluster.py): 1 s to 10 s, so that the daemons get the
# session timeout they ask for. Data on disk here (the lab keeps it on tmpfs): a VM reboots.
set -euo pipefail

: "${LAB_DIR:?}" "${ADDR:?}"
REPO=${REPO:-/vagrant}
export LAB_DIR ADDR REPO
export ZK_PORT=${ZK_PORT:-2181}
export ZK_DATA_DIR=${ZK_DATA_DIR:-$LAB_DIR/data}
export ZK_MIN_SESSION_MS=${ZK_MIN_SESSION_MS:-1000}
export ZK_MAX_SESSION_MS=${ZK_MAX_SESSION_MS:-10000}

install -d -m 0755 "$(dirname "$LAB_DIR")" "$LAB_DIR"
bash "$REPO/lab/roles/zookeeper.sh" start
