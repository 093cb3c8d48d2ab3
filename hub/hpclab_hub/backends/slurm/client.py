"""The only place the hub runs SLURM commands (sbatch, scancel, squeue, sinfo), asynchronously and with timeouts."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
from typing import Any

from hpclab_hub.backends.slurm.errors import SlurmError, SlurmUnavailable
from hpclab_hub.backends.slurm.outputs import (
    _SQUEUE_FORMAT,
    JobInfo,
    PartitionState,
    parse_gpu_types,
    parse_node_address,
    parse_partition_lines,
    parse_reservations,
    parse_sinfo_json,
    parse_squeue,
    parse_start_times,
    parse_test_only,
)
from hpclab_hub.config.user_choices import ClusterOptions

_COMMANDS = ("sbatch", "scancel", "squeue", "sinfo", "scontrol", "sacctmgr")


class SlurmClient:
    """Runs SLURM commands with a private SLURM_CONF, a timeout, and SLURM's message on failure."""

    def __init__(
        self,
        slurm_conf: str | None = None,
        timeout: float = 30,
        submit_prefix: list[str] | None = None,
        bin_dir: str | None = None,
        submit_wrapper: str | None = None,
    ):
        self.slurm_conf = slurm_conf or os.environ.get("SLURM_CONF")
        self.timeout = timeout
        self.submit_prefix = submit_prefix or []
        self.bin_dir = bin_dir
        self.submit_wrapper = submit_wrapper
        self.calls: dict[str, int] = {}
        self.node_addresses: dict[str, str] = {}

    @classmethod
    def for_backend(cls, backend) -> SlurmClient:
        """The client of a deploy YAML's SLURM backend (its slurm.conf, command timeout, submit prefix and wrapper, commands).

        Without a ``submit_prefix`` in the YAML: ``sudo -n -u {username}`` before a ``submit_wrapper`` (sudo keeps no
        environment; the wrapper gets the job's on stdin), else ``sudo -E -u {username}`` (the hub as root)."""
        wrapper = getattr(backend, "submit_wrapper", None)
        prefix = backend.submit_prefix
        if prefix is None:
            prefix = ["sudo", "-n", "-u", "{username}"] if wrapper else ["sudo", "-E", "-u", "{username}"]
        return cls(backend.slurm_conf, backend.command_timeout, prefix, getattr(backend, "bin_dir", None), wrapper)

    def path(self, base: str | None = None) -> str:
        """PATH for SLURM commands and jobs: the backend's ``bin_dir`` first, then ``base`` (the hub's PATH)."""
        base = base if base is not None else os.environ.get("PATH", "/usr/bin:/bin")
        if not self.bin_dir:
            return base
        return ":".join([self.bin_dir, *(part for part in base.split(":") if part and part != self.bin_dir)])

    def command(self, name: str) -> str:
        """A SLURM command by name: in ``bin_dir`` when the backend names one, else found on PATH."""
        return os.path.join(self.bin_dir, name) if self.bin_dir else name

    def command_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for SLURM commands: ``extra`` only plus PATH and SLURM_CONF (never the hub's secrets).

        With a ``bin_dir``, it leads PATH here and in ``extra``'s (the job's) PATH, so that commands run
        inside the job (squeue for the time left, srun) are the same release's."""
        env = {"PATH": self.path(), "LANG": "C.UTF-8"}
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        env.update(extra or {})
        if "PATH" in (extra or {}):
            env["PATH"] = self.path(env["PATH"])
        return env

    async def run(
        self, argv: list[str], stdin: str | None = None, env: dict[str, str] | None = None, with_stderr: bool = False
    ) -> str:
        """Run one command; return stdout (and stderr after it).

        Raises SlurmError on a non-zero exit, SlurmUnavailable on a timeout.
        """
        name = next((os.path.basename(a) for a in argv if os.path.basename(a) in _COMMANDS), argv[0])
        self.calls[name] = self.calls.get(name, 0) + 1
        if argv[0] in _COMMANDS:  # the hub's own call: the backend's command
            argv = [self.command(argv[0]), *argv[1:]]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env or self.command_env(),
            cwd="/",
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin is not None else None), self.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise SlurmUnavailable(f"{name} did not answer within {self.timeout:.0f} s", name) from None
        if proc.returncode != 0:
            message = err.decode(errors="replace").strip() or f"{name} exited with {proc.returncode}"
            if "Unable to contact slurm controller" in message or "Socket timed out" in message:
                raise SlurmUnavailable(message, name)
            raise SlurmError(message, name)
        return out.decode(errors="replace") + (err.decode(errors="replace") if with_stderr else "")

    def as_user(self, username: str, argv: list[str]) -> list[str]:
        """argv run as ``username`` through the configured prefix (sudo by default), PATH and SLURM_CONF kept.

        With a submit wrapper: the prefix, the wrapper and argv as they are (``hpclab-submit sbatch --parsable``);
        the wrapper takes the commands and slurm.conf from its own root-owned configuration."""
        prefix = [part.format(username=username) for part in self.submit_prefix]
        if self.submit_wrapper:
            return [*prefix, self.submit_wrapper, *argv]
        if not prefix:
            return argv
        keep = ["env", f"PATH={self.path()}"]
        if self.slurm_conf:
            keep.append(f"SLURM_CONF={self.slurm_conf}")
        return prefix + keep + [self.command(argv[0]), *argv[1:]]

    async def submit(self, username: str, script: str, env: dict[str, str]) -> str:
        """sbatch the script (on stdin, never a file) as the user with ``env`` as the job's environment; the job id.

        Through a submit wrapper, the script and the job's environment go together on stdin (one JSON object):
        sudo keeps no environment, and the API token is never in an argument."""
        if self.submit_wrapper:
            request = self.wrapper_request(script, self.command_env(env))
            out = await self.run(self.as_user(username, ["sbatch", "--parsable"]), stdin=request, env=self.command_env())
        else:
            out = await self.run(self.as_user(username, ["sbatch", "--parsable"]), stdin=script, env=self.command_env(env))
        job_id = out.strip().split(";")[0]
        if not job_id.isdigit():
            raise SlurmError(f"sbatch gave no job id: {out.strip()!r}", "sbatch")
        return job_id

    async def expected_start(self, username: str, script: str) -> str:
        """When SLURM would start this job if it were submitted now (``sbatch --test-only`` as the user).

        Returns the start time as SLURM writes it (``2026-12-06T11:09:17``); raises SlurmError with
        SLURM's words for a job it would never run (``Requested node configuration is not available``).
        Nothing is queued.
        """
        stdin = self.wrapper_request(script, self.command_env()) if self.submit_wrapper else script
        return parse_test_only(await self.run(self.as_user(username, ["sbatch", "--test-only"]), stdin=stdin, with_stderr=True))

    @staticmethod
    def wrapper_request(script: str, env: dict[str, str]) -> str:
        """What the submit wrapper reads on stdin: the job's environment (less SLURM_CONF, the wrapper's own) and script."""
        return json.dumps({"environment": {k: v for k, v in env.items() if k != "SLURM_CONF"}, "script": script})

    async def cancel(self, job_id: str) -> None:
        """scancel the job (as root/the hub: works for any user's job)."""
        await self.run(["scancel", job_id])

    async def jobs(self) -> dict[str, JobInfo]:
        """Every job SLURM still knows (all states), in one squeue call."""
        return parse_squeue(await self.run(["squeue", "-h", "-t", "all", "-o", _SQUEUE_FORMAT]))

    async def start_times(self, job_ids: list[str]) -> dict[str, str]:
        """Expected start times of pending jobs, where the scheduler has computed one."""
        if not job_ids:
            return {}
        return parse_start_times(await self.run(["squeue", "--start", "-h", "-j", ",".join(job_ids), "-o", "%i|%S"]))

    async def node_address(self, node: str) -> str:
        """Where the hub and its proxy reach a job's server on ``node``: the address slurmctld itself reaches that
        node at (its ``NodeAddr``), so that no name has to resolve on the hub's host; the name when SLURM does not
        answer. Kept per node for the hub's life."""
        if node not in self.node_addresses:
            try:
                self.node_addresses[node] = parse_node_address(await self.run(["scontrol", "show", "node", node, "-o"]), node)
            except SlurmError:
                return node
        return self.node_addresses[node]

    async def partitions(self) -> dict[str, PartitionState]:
        """Free cores and GPUs per partition (one sinfo call)."""
        return parse_sinfo_json(await self.sinfo())

    async def sinfo(self) -> dict[str, Any]:
        """``sinfo --json -N`` (one record per node and partition where the data_parser layout groups nodes)."""
        return json.loads(await self.run(["sinfo", "--json", "-N"]))


async def partition_settings(client: SlurmClient) -> dict[str, dict[str, str]]:
    """Each partition's settings (MaxTime, State, ...) from one scontrol call."""
    return parse_partition_lines(await client.run(["scontrol", "show", "partition", "-o"]))


async def reservation_lines(client: SlurmClient) -> str:
    """``scontrol show reservation -o`` ('' when the cluster has none)."""
    try:
        return await client.run(["scontrol", "show", "reservation", "-o"])
    except SlurmUnavailable:
        raise
    except SlurmError as error:
        if "No reservations in the system" in error.message:
            return ""
        raise


async def cluster_options(client: SlurmClient, user: str, wanted: set[str]) -> ClusterOptions:
    """Ask the cluster only what a profile's choices defer to it: the user's accounts, reservations, GPU types."""

    options = ClusterOptions()
    if "account" in wanted:
        try:
            out = await client.run(["sacctmgr", "-nP", "show", "assoc", f"user={user}", "format=account"])
            options.accounts = sorted({line.strip() for line in out.splitlines() if line.strip()})
        except SlurmError as error:
            options.errors["account"] = f"the cluster's accounting did not answer ({error.message})"
    if "reservation" in wanted:
        try:
            options.reservations = parse_reservations(await reservation_lines(client), user)
        except SlurmError as error:
            options.errors["reservation"] = f"scontrol did not list the reservations ({error.message})"
    if "gpu_type" in wanted:
        try:
            options.gpu_types = parse_gpu_types(await client.sinfo())
        except (SlurmError, ValueError) as error:
            options.errors["gpu_type"] = f"sinfo did not list the GPU types ({getattr(error, 'message', error)})"
    return options


async def extend_job(client: SlurmClient, job_id: str, seconds: int) -> None:
    """Set the job's time limit to ``seconds`` in all (``scontrol update``: needs SLURM operator rights)."""
    from hpclab.slurm import format_time

    try:
        await client.run(["scontrol", "update", f"JobId={job_id}", f"TimeLimit={format_time(seconds)}"])
    except SlurmError as error:
        raise type(error)(error.message + operator_hint(error.message), error.command) from None


def operator_hint(message: str) -> str:
    """What to do when SLURM refused the hub's account an operator's command ('' for any other refusal)."""
    # scontrol update of someone else's job without rights: "Invalid user id" (ESLURM_USER_ID_MISSING) on 22.05-26.05
    refusals = ("ccess/permission denied", "not authorized", "invalid user id")
    if not any(refusal in message.lower() for refusal in refusals):
        return ""
    me = pwd.getpwuid(os.geteuid()).pw_name
    return (
        f". The hub's account {me} needs SLURM operator rights to extend and cancel other people's jobs: "
        f'sacctmgr modify user {me} set adminlevel=operator (docs/slurm.md, "A hub that is not root")'
    )
