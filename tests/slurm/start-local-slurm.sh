#!/usr/bin/env bash
# Start a single-node SLURM on this machine for the `slurm` tests (Debian, run as root):
#   bash tests/slurm/start-local-slurm.sh
# Installs munge + slurmctld/slurmd/slurm-client if missing, writes /etc/slurm/slurm.conf for this
# host, starts munged, slurmctld and slurmd, and waits until `sinfo` shows the node idle.
# Idempotent: with SLURM already up it returns at once. Logs: /var/log/slurm/.
set -euo pipefail

node="$(hostname -s)"
conf=/etc/slurm/slurm.conf
wait_s="${GPTX_SLURM_WAIT_S:-90}"

node_state() { sinfo -h -n "$node" -o %t 2>/dev/null | head -n1 || true; }

if command -v sinfo >/dev/null && [[ "$(node_state)" =~ ^(idle|mix|alloc) ]]; then
  echo "SLURM already up: node $node is $(node_state)"
  exit 0
fi

if [[ "$(id -u)" != 0 ]]; then
  echo "start-local-slurm.sh: must run as root (it installs packages and starts daemons)" >&2
  exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sinfo >/dev/null || ! command -v munged >/dev/null; then
  echo "installing munge and slurm packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null
fi

# munge: a key readable only by the munge user, then the daemon (no systemd on these machines).
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

# slurm.conf: one node (this host, all its CPUs, 90% of its memory), one default partition.
# linuxproc/none/none: no cgroups needed, which these VMs and containers lack.
cpus="$(nproc)"
mem_mb="$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)"
install -d /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > "$conf" <<EOF
# Written by tests/slurm/start-local-slurm.sh: a single-node SLURM for gptx's tests.
ClusterName=gptx
SlurmctldHost=${node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
# Quick turnaround for tests: kill 5 s after SIGTERM, keep finished jobs visible to scontrol 10 min.
KillWait=5
MinJobAge=600
NodeName=${node} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

if ! pgrep -x slurmctld >/dev/null; then slurmctld; fi
if ! pgrep -x slurmd >/dev/null; then slurmd; fi

for _ in $(seq "$wait_s"); do
  state="$(node_state)"
  case "$state" in
    idle|mix|alloc) echo "SLURM up: node $node is $state ($cpus CPUs, ${mem_mb} MB)"; exit 0 ;;
    down*|drain*|drng*) scontrol update NodeName="$node" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 1
done
echo "start-local-slurm.sh: node $node not idle after ${wait_s}s (state: '$(node_state)');" \
  "see /var/log/slurm/slurmctld.log and slurmd.log" >&2
exit 1
