#!/usr/bin/env python3
"""A real single-node SLURM cluster on loopback, for the `slurm` tests and for trying a sweep.

    sudo python scripts/slurm_cluster.py install            # the Debian packages (idempotent)
    sudo python scripts/slurm_cluster.py up /tmp/slurm      # start it; prints `export SLURM_CONF=...`
    sudo python scripts/slurm_cluster.py down /tmp/slurm    # cancel its jobs, stop it
    sudo python scripts/slurm_cluster.py run -- make sweep LAUNCHER=slurm   # up, run, down

Everything lives under one folder (configs, logs, state, the MUNGE key, the MariaDB data) and
every daemon listens on 127.0.0.1 on ports picked free at start, so the host's /etc/slurm, any
system MUNGE or MariaDB and a second cluster beside it are left alone. Clients reach it through
`SLURM_CONF=<folder>/etc/slurm.conf` (sbatch, squeue, sacct, scontrol; submitit calls them).

The cluster: one node with this machine's CPUs (or --cpus), two partitions: `batch` (default,
preemptible: PreemptMode=REQUEUE, the job gets its --signal at once, then GraceTime) and `urgent`
(a higher PriorityTier, preempts `batch`). Accounting goes through slurmdbd and MariaDB, because
submitit reads job states only through `sacct`. Needs root (daemons, apt-get); no systemd.

In Python (the tests): `with LocalSlurm(folder) as cluster: subprocess.run(..., env=cluster.env)`;
the daemons are then children of this process and are reaped when it stops them.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ["slurm-wlm", "munge", "slurmdbd", "mariadb-server"]
PROGRAMS = ["munged", "mariadbd", "mariadb-install-db", "mariadb", "slurmdbd", "slurmctld",
            "slurmd", "sbatch", "squeue", "sacct", "scontrol", "scancel", "sinfo"]
NODE = "lorarepro"
MARKER = "LORA_REPRO_SLURM_CLUSTER"  # set in the daemons' environment: finds their leftovers
ORDER = ["munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"]


class ClusterError(RuntimeError):
    """The cluster could not be installed or started (the message says why, with log tails)."""


def missing_programs() -> list[str]:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [p for p in PROGRAMS if not shutil.which(p, path=path)]


def install(quiet: bool = True) -> None:
    """apt-get the packages if any program is missing; ClusterError when that is not possible."""
    if not missing_programs():
        return
    if os.geteuid() != 0:
        raise ClusterError(f"SLURM is not installed ({', '.join(missing_programs())} missing) and "
                           f"installing {' '.join(PACKAGES)} needs root")
    if not shutil.which("apt-get"):
        raise ClusterError(f"SLURM is not installed and there is no apt-get to install {' '.join(PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]
    out = subprocess.run(cmd, env=env, capture_output=quiet, text=True)
    if out.returncode != 0:  # stale or empty package lists: update once and retry
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=quiet, text=True)
        out = subprocess.run(cmd, env=env, capture_output=quiet, text=True)
    if out.returncode != 0 or missing_programs():
        tail = ((out.stdout or "") + (out.stderr or ""))[-1500:]
        raise ClusterError(f"apt-get install {' '.join(PACKAGES)} failed (exit {out.returncode}); "
                           f"still missing: {', '.join(missing_programs())}\n{tail}")


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 4096


class LocalSlurm:
    """One cluster in `root`. start() brings it up (ClusterError if it cannot), stop() takes it down."""

    def __init__(self, root: str | os.PathLike, cpus: int | None = None, mem_per_cpu_mb: int = 1024,
                 grace_s: int = 10, detach: bool = False):
        self.root = Path(root).resolve()
        self.cpus = cpus or os.cpu_count() or 1
        self.mem_per_cpu_mb = mem_per_cpu_mb
        self.grace_s = grace_s
        self.detach = detach  # True: daemons outlive this process (the `up` command)
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf = self.root / "etc" / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    # ---- layout and configs ----------------------------------------------------------------
    def _paths(self) -> None:
        r = self.root
        self.etc, self.log, self.run = r / "etc", r / "log", r / "run"
        self.munge_dir, self.db_dir = r / "munge", r / "mysql"
        self.munge_socket = r / "munge-socket" / "munge.socket"  # its folder: searchable by all

    def _prepare(self) -> None:
        self._paths()
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # munge and mysql must reach their folders
        for d in (self.etc, self.log, self.run, self.root / "state", self.root / "spool"):
            d.mkdir(exist_ok=True)
        for parent in self.root.parents:  # munged and mariadbd run as their own users
            if parent.stat().st_mode & 0o001 == 0:
                raise ClusterError(f"{parent} is not searchable by other users (mode "
                                   f"{oct(parent.stat().st_mode & 0o777)}): put the cluster folder elsewhere")
        munge, mysql = pwd.getpwnam("munge"), pwd.getpwnam("mysql")
        self.munge_dir.mkdir(mode=0o700, exist_ok=True)
        key = self.munge_dir / "munge.key"
        if not key.exists():
            key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o400)
        self.munge_socket.parent.mkdir(mode=0o755, exist_ok=True)
        for p in (self.munge_dir, key, self.munge_socket.parent):
            os.chown(p, munge.pw_uid, munge.pw_gid)
        for p in (self.log,):
            os.chmod(p, 0o777 | 0o1000)  # sticky, world-writable: munged and mariadbd log here

        (self.ctld_port, self.slurmd_port, self.dbd_port, self.db_port) = _free_ports(4)
        self.db_password = secrets.token_hex(12)
        self.host = socket.gethostname().split(".")[0]
        memory = min(_memory_mb() // 2, self.cpus * self.mem_per_cpu_mb * 4)
        common = f"AuthType=auth/munge\nAuthInfo=socket={self.munge_socket}"
        batch = (f"PartitionName=batch Nodes={NODE} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 "
                 f"PreemptMode=REQUEUE GraceTime={self.grace_s}")
        self.conf.write_text(f"""# written by scripts/slurm_cluster.py: a one-node test cluster on loopback
ClusterName=lorarepro
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
{common},cred_expire=5
CredType=cred/munge
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool
SlurmctldPidFile={self.run}/slurmctld.pid
SlurmdPidFile={self.run}/slurmd.pid
SlurmctldLogFile={self.log}/slurmctld.log
SlurmdLogFile={self.log}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
KillWait=5
InactiveLimit=0
MinJobAge=600
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU={self.mem_per_cpu_mb}
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.dbd_port}
AccountingStoragePass={self.munge_socket}
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
NodeName={NODE} NodeHostname={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={memory} State=UNKNOWN
{batch}
PartitionName=urgent Nodes={NODE} MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
""")
        dbd = self.etc / "slurmdbd.conf"  # always beside slurm.conf
        dbd.write_text(f"""{common}
DbdHost={self.host}
DbdAddr=127.0.0.1
DbdPort={self.dbd_port}
SlurmUser=root
PidFile={self.run}/slurmdbd.pid
LogFile={self.log}/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.db_port}
StorageUser=slurm
StoragePass={self.db_password}
StorageLoc=slurm_acct_db
""")
        os.chmod(dbd, 0o600)
        self.db_dir.mkdir(exist_ok=True)
        os.chown(self.db_dir, mysql.pw_uid, mysql.pw_gid)

    # ---- processes -------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str], user: str | None = None) -> None:
        out = open(self.log / f"{name}.out", "ab")
        env = {**self.env, MARKER: str(self.root)}
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, user=user, start_new_session=self.detach)
        out.close()
        self.procs[name] = proc
        self._save_pids()

    def _save_pids(self) -> None:
        (self.run / "pids.json").write_text(json.dumps({n: p.pid for n, p in self.procs.items()}))

    def _wait(self, what: str, ready, timeout: float, logs: list[str]) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise ClusterError(f"{name} exited with {proc.returncode} while waiting for {what}"
                                       + self._logs(logs + [name]))
            if ready():
                return
            time.sleep(0.2)
        raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}" + self._logs(logs))

    def _logs(self, names: list[str]) -> str:
        text = ""
        for name in dict.fromkeys(names):
            for path in sorted(self.log.glob(f"{name}*")):
                text += f"\n--- {path}:\n{_tail(path)}"
        return text

    def _ok(self, *cmd: str) -> bool:
        return subprocess.run(cmd, env=self.env, capture_output=True, timeout=30).returncode == 0

    def _sql(self, sql: str) -> None:
        out = subprocess.run(["mariadb", "--no-defaults", f"--socket={self.db_dir}/mysqld.sock",
                              "-uroot", "-e", sql], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise ClusterError(f"MariaDB setup failed: {out.stderr.strip()}")

    def start(self, timeout: float = 90) -> "LocalSlurm":
        install_missing = missing_programs()
        if install_missing:
            raise ClusterError(f"not installed: {', '.join(install_missing)} (run: "
                               f"python scripts/slurm_cluster.py install)")
        if os.geteuid() != 0:
            raise ClusterError("the cluster's daemons need root")
        started = time.time()
        try:
            self._prepare()
            m = self.munge_dir
            self._spawn("munged", ["munged", "--foreground", f"--socket={self.munge_socket}",
                                   f"--key-file={m}/munge.key", f"--pid-file={m}/munged.pid",
                                   f"--seed-file={m}/munged.seed", f"--log-file={self.log}/munged.log"],
                        user="munge")
            if not (self.db_dir / "mysql").is_dir():
                init = subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.db_dir}",
                                       "--user=mysql", "--skip-test-db", "--auth-root-authentication-method=socket"],
                                      capture_output=True, text=True, timeout=120)
                if init.returncode != 0:
                    raise ClusterError(f"mariadb-install-db failed:\n{(init.stdout + init.stderr)[-1500:]}")
            self._spawn("mariadbd", ["mariadbd", "--no-defaults", f"--datadir={self.db_dir}",
                                     f"--socket={self.db_dir}/mysqld.sock", f"--port={self.db_port}",
                                     "--bind-address=127.0.0.1", "--user=mysql", "--skip-log-bin",
                                     f"--pid-file={self.db_dir}/mariadbd.pid",
                                     f"--log-error={self.log}/mariadbd.log",
                                     "--innodb-buffer-pool-size=32M", "--max-connections=50"])
            self._wait("MUNGE", self.munge_socket.exists, 20, ["munged"])
            self._wait("MariaDB", lambda: _listening(self.db_port), 60, ["mariadbd"])
            self._sql(
                "CREATE DATABASE IF NOT EXISTS slurm_acct_db;"
                f"CREATE OR REPLACE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{self.db_password}';"
                f"CREATE OR REPLACE USER 'slurm'@'localhost' IDENTIFIED BY '{self.db_password}';"
                "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
                "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';")
            self._spawn("slurmdbd", ["slurmdbd", "-D"])
            self._wait("slurmdbd", lambda: _listening(self.dbd_port), 60, ["slurmdbd"])
            self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-f", str(self.conf)])
            self._wait("slurmctld", lambda: self._ok("scontrol", "ping"), 60, ["slurmctld"])
            self._spawn("slurmd", ["slurmd", "-D", "-N", NODE, "-f", str(self.conf)])
            self._wait("the node to be idle", self._node_idle, 60, ["slurmd", "slurmctld"])
            self._wait("accounting (sacct)", lambda: self._ok("sacct", "-n", "-X"), 60,
                       ["slurmdbd", "slurmctld"])
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.time() - started
        return self

    def _node_idle(self) -> bool:
        out = subprocess.run(["sinfo", "-h", "-n", NODE, "-o", "%t"], env=self.env,
                             capture_output=True, text=True, timeout=30)
        return out.returncode == 0 and out.stdout.strip().startswith("idle")

    def stop(self) -> None:
        """Cancel every job, stop the daemons (last started first), kill what they left behind."""
        self._paths()
        if not self.procs:  # another process started it (`up`): find its daemons by pid file
            self.procs = {}
            try:
                pids = json.loads((self.run / "pids.json").read_text())
            except (OSError, ValueError):
                pids = {}
            self._pids = {n: p for n, p in pids.items() if _is_ours(p, self.root)}
        else:
            self._pids = {n: p.pid for n, p in self.procs.items()}
        if "slurmctld" in self._pids:
            try:
                jobs = subprocess.run(["squeue", "-h", "-o", "%i"], env=self.env, capture_output=True,
                                      text=True, timeout=20).stdout.split()
                if jobs:
                    subprocess.run(["scancel", *jobs], env=self.env, capture_output=True, timeout=20)
                    deadline = time.time() + 15
                    while time.time() < deadline and subprocess.run(
                            ["squeue", "-h", "-o", "%i"], env=self.env, capture_output=True,
                            text=True, timeout=20).stdout.strip():
                        time.sleep(0.5)
            except (OSError, subprocess.SubprocessError):
                pass
        for name in reversed(ORDER):
            pid = self._pids.get(name)
            if pid:
                _terminate(pid, self.procs.get(name))
        for pid in _leftovers(self.root, str(self.conf)):  # slurmstepd, job tasks
            _terminate(pid, None, wait=2)
        self.procs = {}

    def __enter__(self) -> "LocalSlurm":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _is_ours(pid: int, root: Path) -> bool:
    return f"{MARKER}={root}".encode() in _environ(pid).split(b"\0")


def _leftovers(root: Path, conf: str) -> list[int]:
    """Processes this cluster started: carry the daemons' marker, or run a job of this cluster."""
    mine = {os.getpid(), os.getppid()}
    marker, slurm_conf = f"{MARKER}={root}".encode(), f"SLURM_CONF={conf}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        env = _environ(int(entry.name)).split(b"\0")
        if marker in env or (slurm_conf in env and any(v.startswith(b"SLURM_JOB_ID=") for v in env)):
            found.append(int(entry.name))
    return found


def _terminate(pid: int, proc: subprocess.Popen | None, wait: float = 15) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + wait
    while time.time() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return
        elif not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _alive(pid: int) -> bool:
    """Running, and not a zombie (PID 1 on some machines never reaps orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help=f"apt-get install {' '.join(PACKAGES)} if missing")
    for name, text in (("up", "start a cluster in FOLDER (left running)"),
                       ("down", "stop the cluster in FOLDER"),
                       ("run", "start a cluster, run COMMAND with SLURM_CONF set, stop it")):
        p = sub.add_parser(name, help=text)
        if name == "run":
            p.add_argument("--folder", help="where the cluster lives (default: a new temporary folder)")
        else:
            p.add_argument("folder")
        if name != "down":
            p.add_argument("--cpus", type=int, default=None, help="CPUs of the node (default: this machine's)")
        if name == "run":
            p.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install(quiet=False)
            print("installed:", " ".join(PACKAGES))
        elif args.command == "up":
            cluster = LocalSlurm(args.folder, cpus=args.cpus, detach=True).start()
            print(f"SLURM cluster up in {cluster.startup_s:.1f}s: node {NODE} ({cluster.cpus} CPUs), "
                  f"partitions batch (default) and urgent; logs in {cluster.log}")
            print(f"export SLURM_CONF={cluster.conf}")
        elif args.command == "down":
            LocalSlurm(args.folder).stop()
            print("SLURM cluster down")
        else:
            import tempfile

            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            folder = args.folder or tempfile.mkdtemp(prefix="lora-repro-slurm-")
            try:
                with LocalSlurm(folder, cpus=args.cpus) as cluster:
                    print(f"SLURM cluster up in {cluster.startup_s:.1f}s; running: {' '.join(cmd) or 'sinfo'}",
                          flush=True)
                    return subprocess.run(cmd or ["sinfo"], env=cluster.env).returncode
            finally:
                if not args.folder:
                    shutil.rmtree(folder, ignore_errors=True)
    except ClusterError as err:
        print(f"slurm_cluster: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
