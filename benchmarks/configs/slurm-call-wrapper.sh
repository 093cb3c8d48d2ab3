#!/bin/bash
# Counts SLURM calls for benchmarks/slurm_spawn.py, which copies this file as squeue, sinfo, sbatch and
# scancel into <folder>/bin, first on the SLURM hub's PATH. Each call appends one line to
# <folder>/calls.log (time, command, uid, SLURM_JOB_ID (set when a job, not the hub, calls), arguments)
# and then runs the real command.
name=$(basename "$0")
printf '%s\t%s\t%s\t%s\t%s\n' "$EPOCHREALTIME" "$name" "$UID" "${SLURM_JOB_ID:-}" "$*" >>"$(dirname "$0")/../calls.log"
for dir in /usr/bin /bin /usr/sbin /sbin; do
  if [ -x "$dir/$name" ]; then exec "$dir/$name" "$@"; fi
done
echo "$name: not found in /usr/bin, /bin, /usr/sbin or /sbin" >&2
exit 127
