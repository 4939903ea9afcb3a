# .ci/slurm.sh: a one-node SLURM for the tests marked `slurm`, on a clean Debian machine as root
# (CI containers have no systemd: the daemons run in the foreground, backgrounded here).
#
# Sourced by .ci/run:
#     source .ci/slurm.sh
#     slurm_install && slurm_start
#     trap slurm_stop EXIT
#     trap 'exit 143' TERM INT
# slurm_start exports SLURM_CONF (clients and jobs read it); the state, spool, logs and munge
# socket of this SLURM live in SLURM_CI_DIR, a temporary folder that slurm_stop removes.

SLURM_CI_PACKAGES="slurmd slurmctld slurm-client munge"

slurm_log() { echo "slurm.sh: $*" >&2; }

slurm_install() {
    local - missing=0 package
    set +e
    for package in $SLURM_CI_PACKAGES; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing=1
    done
    [ "$missing" = 0 ] && return 0
    # keep the packages' scripts from starting the daemons themselves
    local policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy=1
    fi
    apt-cache show slurmd >/dev/null 2>&1 || apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $SLURM_CI_PACKAGES >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                 $SLURM_CI_PACKAGES >/dev/null; }
    local status=$?
    [ "$policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    return $status
}

# a process of ours that runs (a dead child stays a zombie, which kill -0 still finds, until waited for)
slurm_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null && [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

slurm_munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

slurm_logs() {
    local file
    for file in "$SLURM_CI_DIR"/log/*; do
        [ -f "$file" ] && { echo "== $file" >&2; tail -n 30 "$file" >&2; }
    done
}

slurm_start() {
    local - host cpus memory i
    set +e
    SLURM_CI_DIR=$(mktemp -d /tmp/slurm-ci.XXXXXX) || return 1
    chmod 755 "$SLURM_CI_DIR"
    mkdir -p "$SLURM_CI_DIR"/state "$SLURM_CI_DIR"/spool "$SLURM_CI_DIR"/log
    export SLURM_CI_DIR

    # munged as the munge user, its socket folder readable by everyone
    SLURM_CI_MUNGED=
    if ! slurm_munge_works; then
        mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
        [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge /etc/munge/munge.key /var/lib/munge /var/log/munge /run/munge
        chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key && chmod 755 /run/munge
        setpriv --reuid=munge --regid=munge --init-groups -- /usr/sbin/munged --foreground \
            --log-file="$SLURM_CI_DIR/log/munged.log" </dev/null >/dev/null 2>&1 &
        SLURM_CI_MUNGED=$!
        for i in $(seq 100); do slurm_munge_works && break; sleep 0.1; done
        slurm_munge_works || { slurm_log "munged did not start"; slurm_logs; slurm_stop; return 1; }
    fi

    host=$(hostname -s)
    cpus=$(nproc)
    memory=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
    # no cgroups (containers without systemd), no accounting; jobs start as soon as they are submitted
    cat > "$SLURM_CI_DIR/slurm.conf" <<EOF
ClusterName=ci
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$SLURM_CI_DIR/state
SlurmdSpoolDir=$SLURM_CI_DIR/spool
SlurmctldPidFile=$SLURM_CI_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_CI_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_CI_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_CI_DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0,sched_min_interval=100000
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
KillWait=5
MinJobAge=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$SLURM_CI_DIR/slurm.conf"
    slurmctld -D -i -f "$SLURM_CONF" </dev/null >"$SLURM_CI_DIR/log/slurmctld.out" 2>&1 &
    SLURM_CI_SLURMCTLD=$!
    slurmd -D -f "$SLURM_CONF" </dev/null >"$SLURM_CI_DIR/log/slurmd.out" 2>&1 &
    SLURM_CI_SLURMD=$!
    export SLURM_CI_MUNGED SLURM_CI_SLURMCTLD SLURM_CI_SLURMD
    for i in $(seq 120); do
        [ "$(timeout 5 sinfo -h -o %T 2>/dev/null)" = idle ] && return 0
        slurm_alive "$SLURM_CI_SLURMCTLD" && slurm_alive "$SLURM_CI_SLURMD" || break
        sleep 0.25
    done
    slurm_log "the node is not idle"
    slurm_logs
    slurm_stop
    return 1
}

slurm_stop() {
    local - jobs pid process environment
    set +e
    [ -n "${SLURM_CI_DIR:-}" ] || return 0
    if slurm_alive "${SLURM_CI_SLURMCTLD:-}"; then  # jobs first, so that slurmd ends their processes
        jobs=$(timeout 10 squeue -h -o %i 2>/dev/null)
        [ -n "$jobs" ] && timeout 10 scancel --full $jobs 2>/dev/null
        for _ in $(seq 50); do [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
    fi
    for pid in ${SLURM_CI_SLURMD:-} ${SLURM_CI_SLURMCTLD:-} ${SLURM_CI_MUNGED:-}; do
        slurm_alive "$pid" && kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 50); do slurm_alive "$pid" || break; sleep 0.1; done
        slurm_alive "$pid" && kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    # what is left of this SLURM's jobs: slurmstepd and job processes whose environment names its slurm.conf
    for process in /proc/[0-9]*; do
        environment=$({ tr '\0' '\n' < "$process/environ"; } 2>/dev/null) || continue
        [[ $'\n'$environment$'\n' == *$'\n'"SLURM_CONF=$SLURM_CI_DIR/slurm.conf"$'\n'* ]] || continue
        if [ "$(cat "$process/comm" 2>/dev/null)" = slurmstepd ] || [[ $'\n'$environment == *$'\n'SLURM_JOB_ID=* ]]; then
            kill -KILL "${process#/proc/}" 2>/dev/null
        fi
    done
    rm -rf "$SLURM_CI_DIR"
    unset SLURM_CI_DIR SLURM_CONF SLURM_CI_MUNGED SLURM_CI_SLURMCTLD SLURM_CI_SLURMD
    return 0
}
