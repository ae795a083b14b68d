"""Where a `tools/launch.py` command runs: this process, N local processes, SLURM, or a TPU VM pod.

Every launcher runs the *same* command line on every process with `--launcher local`; the
processes find each other through `jax.distributed` (see `flanjax/train/distributed.py`), whose
coordinator address, process count and id come from the environment variables below (or, under
SLURM, from SLURM's own variables; on TPU VMs JAX discovers them itself).

Example:
  >>> print(slurm_script(["train", "--config", "configs/flan_t5_base.py", "--workdir", "w"],
  ...                    nodes=2, gpus_per_node=8, job_name="flan"))  # an sbatch script
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from flanjax.train.env import COORDINATOR_ENV, NUM_PROCESSES_ENV, PROCESS_ID_ENV

LAUNCHERS = ("local", "multiprocess", "slurm", "tpu-vm")
SLURM_PORT = 12355


class LaunchError(RuntimeError):
  """A launcher cannot run (missing tool, bad arguments); the message says what to do."""


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def local_command(args: Sequence[str], python: str | None = None) -> list[str]:
  """The per-process command: this script with the same arguments, launched locally."""
  script = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "launch.py"
  )
  return [python or sys.executable, script, *args, "--launcher", "local"]


def run_multiprocess(
  args: Sequence[str], num_processes: int, *, env: dict | None = None, timeout: float | None = None
) -> int:
  """Runs `num_processes` local copies wired with jax.distributed on a loopback coordinator.

  Returns the first non-zero exit code (the others are then stopped), or 0.
  """
  if num_processes < 1:
    raise LaunchError(f"--num_processes must be >= 1, got {num_processes}")
  coordinator = f"127.0.0.1:{free_port()}"
  procs = []
  for process_id in range(num_processes):
    proc_env = dict(os.environ if env is None else env)
    proc_env.update(
      {
        COORDINATOR_ENV: coordinator,
        NUM_PROCESSES_ENV: str(num_processes),
        PROCESS_ID_ENV: str(process_id),
      }
    )
    procs.append(subprocess.Popen(local_command(args), env=proc_env))
  ids = {proc.pid: index for index, proc in enumerate(procs)}
  deadline = None if timeout is None else time.monotonic() + timeout
  code = 0
  try:
    while procs:
      for proc in list(procs):
        rc = proc.poll()
        if rc is None:
          continue
        procs.remove(proc)
        if rc != 0 and code == 0:
          code = rc
          print(
            f"multiprocess: process {ids[proc.pid]} of {num_processes} exited with code {rc}"
            f"{_signal_name(rc)}; stopping the other {len(procs)} (their errors about lost "
            "connections follow from it)",
            file=sys.stderr,
            flush=True,
          )
          for other in procs:  # one failed: the collective would hang the others
            other.send_signal(signal.SIGTERM)
      if deadline is not None and time.monotonic() > deadline:
        raise LaunchError(f"multiprocess run exceeded {timeout} s")
      time.sleep(0.2)
  finally:
    for proc in procs:
      proc.kill()
  return code


def _signal_name(returncode: int) -> str:
  """ " (killed by SIGKILL)" for a negative return code, "" otherwise."""
  if returncode < 0:
    try:
      return f" (killed by {signal.Signals(-returncode).name})"
    except ValueError:
      return ""
  return ""


def slurm_script(
  args: Sequence[str],
  *,
  nodes: int,
  gpus_per_node: int,
  job_name: str,
  time_limit: str = "24:00:00",
  partition: str | None = None,
  workdir_for_logs: str = ".",
  repo_dir: str | None = None,
  python: str | None = None,
  port: int = SLURM_PORT,
) -> str:
  """An sbatch script: one task per GPU, coordinator = first node of the allocation.

  Every argument is quoted for each shell layer it crosses (sbatch's bash, then srun's
  `bash -c`), so paths with spaces or quotes arrive intact; `python` defaults to the interpreter
  running this launcher (the same venv on a shared file system).
  """
  repo_dir = repo_dir or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  command = shlex.join([python or sys.executable, "tools/launch.py", *args, "--launcher", "local"])
  per_task = (
    f"export {PROCESS_ID_ENV}=$SLURM_PROCID; export CUDA_VISIBLE_DEVICES=$SLURM_LOCALID; "
    f"exec {command}"
  )
  lines = [
    "#!/bin/bash",
    f"#SBATCH --job-name={shlex.quote(job_name)}",
    f"#SBATCH --nodes={int(nodes)}",
    f"#SBATCH --ntasks-per-node={int(gpus_per_node)}",
    f"#SBATCH --gpus-per-node={int(gpus_per_node)}",
    f"#SBATCH --time={shlex.quote(time_limit)}",
    f"#SBATCH --output={shlex.quote(os.path.join(workdir_for_logs, 'slurm-%j.out'))}",
  ]
  if partition:
    lines.append(f"#SBATCH --partition={shlex.quote(partition)}")
  lines += [
    "set -euo pipefail",
    f"cd {shlex.quote(repo_dir)}",
    "# jax.distributed: process 0 on the first node coordinates; each task is one process/GPU.",
    'COORDINATOR_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
    f'export {COORDINATOR_ENV}="$COORDINATOR_HOST:{int(port)}"',
    f'export {NUM_PROCESSES_ENV}="$SLURM_NTASKS"',
    f"srun --kill-on-bad-exit=1 bash -c {shlex.quote(per_task)}",
  ]
  return "\n".join(lines) + "\n"


def submit_slurm(script: str, path: str) -> str:
  if shutil.which("sbatch") is None:
    raise LaunchError(
      "sbatch is not installed on this machine: run this on a SLURM login node, or use "
      f"--dry_run to print the script (it was not written to {path})"
    )
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    f.write(script)
  return subprocess.run(["sbatch", path], check=True, capture_output=True, text=True).stdout


def tpu_vm_command(
  args: Sequence[str],
  *,
  tpu: str,
  zone: str,
  project: str | None = None,
  repo_dir: str = "~/flanjax",
  python: str | None = None,
) -> list[str]:
  """The gcloud command running the same launch on every host of a TPU VM slice.

  The remote command line is quoted for the remote shell (a leading `~/` of `repo_dir` is kept
  unquoted so that it expands there); `python` is the hosts' interpreter (default `python3`).
  """
  if not tpu or not zone:
    raise LaunchError("the tpu-vm launcher needs --tpu NAME and --zone ZONE")
  remote = shlex.join([python or "python3", "tools/launch.py", *args, "--launcher", "local"])
  where = "~/" + shlex.quote(repo_dir[2:]) if repo_dir.startswith("~/") else shlex.quote(repo_dir)
  command = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu, f"--zone={zone}"]
  if project:
    command.append(f"--project={project}")
  command += ["--worker=all", f"--command=cd {where} && {remote}"]
  return command


def run_tpu_vm(command: list[str]) -> int:
  if shutil.which("gcloud") is None:
    raise LaunchError(
      "gcloud is not installed: install the Google Cloud CLI and run `gcloud auth login`, or "
      "use --dry_run to print the command"
    )
  return subprocess.run(command, check=False).returncode
