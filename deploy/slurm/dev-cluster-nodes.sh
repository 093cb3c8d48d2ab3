# Sourced by deploy/slurm/dev-cluster: the nodes of a multi-node dev cluster (HPCLAB_SLURM_NODES=N, N > 1).
#
# Each node is its own host on a private network: a network namespace with one address on a bridge this script
# makes ($SUBNET.0/24: the bridge, the "login" side where slurmctld, slurmdbd and the hub listen, is $SUBNET.1,
# node i is $SUBNET.(10+i)), its own host name (UTS namespace: node1, node2, ...), its own spool, pid and log
# file (slurm.conf's %n), and a mount namespace in which /etc/hosts lists the cluster's names and the folders
# in $HIDE (default the repository's .venv: the hub's own software) are covered by an empty read-only tmpfs.
# Everything else (the homes, a shared software prefix, this prefix's munge socket) is the host's own.
# A job's processes are slurmd's children, so they live in its node's namespaces: a server in a job on node2
# listens on node2's address, and sees no .venv.

# the names of this cluster's network objects (15 characters at most), from its controller port
BRIDGE=hpcbr$CTLD_PORT
LOGIN_ADDR=$SUBNET.1

node_name() { echo "$NODE_BASE$1"; }
node_addr() { echo "$SUBNET.$((10 + $1))"; }
node_ns() { echo "hpcns$CTLD_PORT-$1"; }
node_veth() { echo "hpcv$CTLD_PORT-$1"; }
node_list() { if [ "$NODES" -gt 1 ]; then echo "$NODE_BASE[1-$NODES]"; else node_name 1; fi; }

# the bridge, and per node a namespace joined to it by a veth pair; kept when they exist (idempotent)
nodes_network_up() {
  local i ns veth
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr show dev "$BRIDGE" | grep -q "inet $LOGIN_ADDR/24" || ip addr add "$LOGIN_ADDR/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  {
    echo "127.0.0.1 localhost"
    echo "$LOGIN_ADDR $NODE"
    for ((i = 1; i <= NODES; i++)); do echo "$(node_addr "$i") $(node_name "$i")"; done
  } >"$PREFIX/etc/hosts"
  for ((i = 1; i <= NODES; i++)); do
    ns=$(node_ns "$i"); veth=$(node_veth "$i")
    [ -e "/run/netns/$ns" ] || ip netns add "$ns"
    if ! ip link show "$veth" >/dev/null 2>&1; then
      ip link add "$veth" type veth peer name eth0 netns "$ns"
    fi
    ip link set "$veth" master "$BRIDGE" up
    ip -n "$ns" addr show dev eth0 | grep -q "inet $(node_addr "$i")/24" || ip -n "$ns" addr add "$(node_addr "$i")/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
  done
}

# slurmd of node $1 in its namespaces: host name, /etc/hosts, the hidden folders; slurmd forks and stays there.
# nsenter, not `ip netns exec`: that one mounts a fresh /sys, without the cgroup file systems slurmd looks for
node_start() {
  local i=$1 name ns stepd=""
  name=$(node_name "$i"); ns=$(node_ns "$i")
  running "$PREFIX/run/slurmd-$name.pid" && return 0
  mkdir -p "$PREFIX/state/d-$name"
  [ -z "$ROOT" ] || stepd=$(readlink -f "$SBIN/slurmstepd")
  # shellcheck disable=SC2016  # expanded by the inner shell, from its arguments
  nsenter --net="/run/netns/$ns" unshare --uts --mount --propagation private -- /bin/sh -c '
    name=$1 hosts=$2 hide=$3 slurmd=$4 conf=$5 stepd=$6
    hostname "$name"
    mount --bind "$hosts" /etc/hosts
    old_ifs=$IFS; IFS=:
    for dir in $hide; do [ -d "$dir" ] && mount -t tmpfs -o ro,size=4k,mode=755 hpclab-hidden "$dir"; done
    IFS=$old_ifs
    if [ -n "$stepd" ]; then exec "$slurmd" -f "$conf" -N "$name" -d "$stepd"; fi
    exec "$slurmd" -f "$conf" -N "$name"' \
    node-shell "$name" "$PREFIX/etc/hosts" "$HIDE" "$SBIN/slurmd" "$CONF" "$stepd"
}

# slurmd and every process left in a node's namespace (its jobs) ended, then the namespaces, veths and bridge gone
nodes_down() {
  local i name ns pids
  for ((i = 1; i <= NODES_MAX; i++)); do
    name=$(node_name "$i"); ns=$(node_ns "$i")
    if running "$PREFIX/run/slurmd-$name.pid"; then kill "$(cat "$PREFIX/run/slurmd-$name.pid")" 2>/dev/null || true; fi
    [ -e "/run/netns/$ns" ] || continue
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -z "$pids" ] || kill $pids 2>/dev/null || true
    for _ in $(seq 1 50); do [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break; sleep 0.1; done
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
    ip link del "$(node_veth "$i")" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE"; fi
}

# slurm.conf's node lines for N nodes, each at its namespace's address
nodes_conf_lines() {
  local i
  for ((i = 1; i <= NODES; i++)); do
    echo "NodeName=$(node_name "$i") NodeAddr=$(node_addr "$i") CPUs=$CPUS RealMemory=$MEMORY_MB $1 State=UNKNOWN"
  done
}
