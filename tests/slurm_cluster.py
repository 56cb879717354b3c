"""A one-node Slurm cluster on localhost for the tests: munged, slurmctld and slurmd as root with a
minimal configuration in a temporary folder (its own munge key and socket, its own ports), so it
neither needs nor touches a system configuration. Debian's slurm-wlm and munge (.ci/run installs them).

    with SlurmCluster(tmp_dir) as cluster:   # raises ClusterUnavailable saying why when it cannot start
        subprocess.run(["sbatch", ...], env=cluster.env)
"""
import os
import os.path as osp
import shutil
import signal
import socket
import subprocess
import time

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")


class ClusterUnavailable(RuntimeError):
    """The cluster cannot start here; the message says exactly why."""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:]).strip()
    except OSError:
        return "(no log)"


class SlurmCluster:
    def __init__(self, folder, cpus=2):
        self.folder = str(folder)
        self.cpus = cpus
        self.host = socket.gethostname().split(".")[0]
        self.conf = osp.join(self.folder, "slurm.conf")
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        self.procs = {}

    def why_not(self):
        """None when the cluster can be tried here, else the reason."""
        missing = [d for d in DAEMONS if shutil.which(d) is None and not osp.exists(f"/usr/sbin/{d}")]
        if missing:
            return f"{', '.join(missing)} not installed (apt-get install slurm-wlm munge; .ci/run does it)"
        if os.geteuid() != 0:
            return "slurmd must run as root to start jobs, and the tests run as an ordinary user"
        return None

    def _exe(self, name):
        return shutil.which(name) or f"/usr/sbin/{name}"

    def write_config(self):
        for sub in ("state", "spool", "munge"):
            os.makedirs(osp.join(self.folder, sub), mode=0o700, exist_ok=True)
        key = osp.join(self.folder, "munge", "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        self.socket = osp.join(self.folder, "munge", "munge.socket")
        lines = [
            "ClusterName=clipadapt-test",
            f"SlurmctldHost={self.host}",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.socket}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={self.folder}/state",
            f"SlurmdSpoolDir={self.folder}/spool",
            f"SlurmctldPidFile={self.folder}/slurmctld.pid",
            f"SlurmdPidFile={self.folder}/slurmd.pid",
            f"SlurmctldLogFile={self.folder}/slurmctld.log",
            f"SlurmdLogFile={self.folder}/slurmd.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/backfill",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none",
            "ReturnToService=2",
            "SlurmdTimeout=60",
            "MinJobAge=600",
            f"NodeName={self.host} CPUs={self.cpus} State=UNKNOWN",
            f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
        ]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _start(self, name, args):
        log = open(osp.join(self.folder, f"{name}.out"), "w")
        self.procs[name] = subprocess.Popen([self._exe(name), *args], stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env, start_new_session=True)

    def _check_alive(self, name, log):
        proc = self.procs[name]
        if proc.poll() is not None:
            raise ClusterUnavailable(f"{name} exited with {proc.returncode} at start: "
                                     f"{_tail(log) or _tail(osp.join(self.folder, name + '.out'))}")

    def start(self, timeout=60):
        reason = self.why_not()
        if reason:
            raise ClusterUnavailable(reason)
        self.write_config()
        munge_log = osp.join(self.folder, "munge", "munged.log")
        self._start("munged", ["--foreground", "--force", f"--socket={self.socket}",
                               f"--key-file={self.folder}/munge/munge.key", f"--log-file={munge_log}",
                               f"--pid-file={self.folder}/munge/munged.pid",
                               f"--seed-file={self.folder}/munge/munged.seed"])
        deadline = time.time() + 15
        while not osp.exists(self.socket):
            self._check_alive("munged", munge_log)
            if time.time() > deadline:
                raise ClusterUnavailable(f"munged did not open its socket in 15 s: {_tail(munge_log)}")
            time.sleep(0.1)
        self._start("slurmctld", ["-D", "-i", "-f", self.conf])
        self._start("slurmd", ["-D", "-f", self.conf])
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            self._check_alive("slurmctld", osp.join(self.folder, "slurmctld.log"))
            self._check_alive("slurmd", osp.join(self.folder, "slurmd.log"))
            proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=self.env)
            state = (proc.stdout.strip() or proc.stderr.strip())
            if proc.returncode == 0 and state in ("idle", "mixed", "allocated"):
                return self
            time.sleep(0.5)
        raise ClusterUnavailable(f"the node did not become idle in {timeout} s (sinfo: {state!r}); slurmctld log: "
                                 f"{_tail(osp.join(self.folder, 'slurmctld.log'))}; slurmd log: "
                                 f"{_tail(osp.join(self.folder, 'slurmd.log'))}")

    def stop(self):
        """Cancel what is left, then stop the daemons we started (by their process ids)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "-u", "root"], capture_output=True, env=self.env)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()
