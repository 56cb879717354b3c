"""Every run of a protocol for one trainer, spread by a launcher; then the paper-style table.

    python -m clipadapt.sweep PROTOCOL TRAINER CFG [--datasets ...] [--seeds 1 2 3]
        [--launcher local|parallel|slurm] [--jobs N] [--no-wait] [slurm options] [-- KEY VALUE ...]

scripts/run_protocol.sh is the user's door to it (it picks the default config and checks names).

Launchers:
- ``local``: the runs one after another in this process's terminal (the default).
- ``parallel``: N runs at a time on this machine, one per GPU (``CUDA_VISIBLE_DEVICES``) or N
  processes on a CPU machine; each run's terminal output goes to ``<run folder>/launcher.out``.
- ``slurm``: a job array per stage through submitit; evaluation jobs depend on the training array;
  each job's output lands in its run folder (``slurm-<job id>.out``); a job that failed is
  resubmitted once (it resumes from its last checkpoint), a pre-empted one is requeued by submitit.
  The command waits with a progress line and prints the table, or returns at once with --no-wait;
  running the same command again reports progress and prints the table when all is done.

Which runs are finished is the run registry's judgement (clipadapt/runs.py): every launcher skips
them, so a sweep killed midway is finished by running the same command again.
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import subprocess
import sys
import time

from . import runs
from .protocols import FEWSHOT_SHOTS, PROTOCOLS, SOURCE_DATASET, check_protocol, default_config
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


class Job:
    """One train.py run of a sweep; `after` is the job whose model it evaluates (None for none)."""

    def __init__(self, spec, stage, after=None):
        self.spec, self.stage, self.after = spec, stage, after
        self.state = "todo"  # todo / finished (before the sweep) / done / failed / blocked
        self.message = ""

    @property
    def label(self):
        return self.spec.label


def plan_jobs(protocol, trainer, config_name, datasets, seeds, shots=16, shots_list=FEWSHOT_SHOTS, opts=(),
              source=SOURCE_DATASET):
    """The jobs of a protocol in the order the local launcher runs them."""
    check_protocol(protocol)
    config_name = config_name or default_config(trainer, protocol)
    jobs = []

    def add(kind, dataset, seed, n_shots, stage, after=None):
        jobs.append(Job(runs.protocol_run(kind, trainer, config_name, dataset, seed, n_shots, opts, source=source,
                                          recipe=os.environ.get("RECIPE", "published")), stage, after))
        return jobs[-1]

    if protocol == "base2new":
        for dataset in datasets:
            for seed in seeds:
                train = add("base2new_train", dataset, seed, shots, "train")
                add("base2new_test", dataset, seed, shots, "test", after=train)
    elif protocol == "fewshot":
        for dataset in datasets:
            for n_shots in shots_list:
                for seed in seeds:
                    add("few_shot", dataset, seed, n_shots, "train")
    elif protocol in ("xd", "dg"):
        for seed in seeds:
            train = add("xd_train", source, seed, shots, "train")
            for dataset in datasets:
                add("xd_test", dataset, seed, shots, "test", after=train)
    elif protocol == "gzsl":
        for dataset in datasets:
            for seed in seeds:
                add("gzsl", dataset, seed, shots, "train")
    return jobs


def check_jobs(jobs, output):
    """Mark finished runs (the registry's judgement) and runs whose folder holds another config."""
    from .config import ConfigError
    for job in jobs:
        try:
            if job.spec.status(output) == "finished":
                job.state = "finished"
        except (runs.RunMismatch, ConfigError, KeyError) as exc:
            job.state, job.message = "failed", str(exc.args[0] if exc.args else exc)


def job_command(job, data, output):
    return [sys.executable, "train.py", *job.spec.train_args(data, output)]


def job_env(job, extra=None):
    env = dict(os.environ, CLIPADAPT_PROTOCOL=job.spec.protocol, **(extra or {}))
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def skip_line(job, output):
    return f"The results exist at {job.spec.output_dir(output)} (so skip this job)"


def blocked(job):
    """True (and the job marked) when the training run it evaluates failed."""
    if job.after is not None and job.after.state in ("failed", "blocked"):
        job.state, job.message = "blocked", f"not run: {job.after.label} failed"
        return True
    return False


# -------------------- local, in order -----------------------------------------------------------

def run_local(jobs, args):
    for job in jobs:
        print(f"=== {args.protocol}: {job.label}", flush=True)
        if job.state == "finished":
            print(skip_line(job, args.output), flush=True)
            continue
        if job.state == "failed" or blocked(job):
            print(f"!!! failed: {job.label}: {job.message}", file=sys.stderr, flush=True)
            continue
        proc = subprocess.run(job_command(job, args.data, args.output), cwd=REPO, env=job_env(job))
        job.state = "done" if proc.returncode == 0 else "failed"
        if proc.returncode:
            print(f"!!! failed: {job.label}", file=sys.stderr, flush=True)


# -------------------- local, in parallel --------------------------------------------------------

def parallel_slots(requested):
    """[(slot name, extra env)]: one per visible GPU, else `requested` CPU processes."""
    try:
        import torch
        n_gpus = torch.cuda.device_count()
    except ImportError:
        n_gpus = 0
    if n_gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(n_gpus)]
        ids = ids[:requested] if requested else ids
        return [(f"GPU {i}", {"CUDA_VISIBLE_DEVICES": i}) for i in ids]
    n = requested or 2
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // n))
    return [(f"process {i + 1}", {"OMP_NUM_THREADS": threads}) for i in range(n)]


def progress_line(jobs, running):
    done = sum(j.state in ("finished", "done") for j in jobs)
    failed = sum(j.state in ("failed", "blocked") for j in jobs)
    return f"[sweep] done {done} / running {running} / failed {failed} / left {len(jobs) - done - failed - running}"


def run_parallel(jobs, args):
    slots = parallel_slots(args.jobs)
    print(f"[sweep] parallel launcher: {len(slots)} at a time ({', '.join(s for s, _ in slots)})", flush=True)
    for job in jobs:
        if job.state == "finished":
            print(skip_line(job, args.output), flush=True)
    free = list(slots)
    active = {}  # Popen -> (job, slot, log file, start time)
    pending = [j for j in jobs if j.state == "todo"]
    try:
        while pending or active:
            for job in list(pending):
                if blocked(job):
                    pending.remove(job)
                    print(f"!!! failed: {job.label}: {job.message}", file=sys.stderr, flush=True)
                elif free and (job.after is None or job.after.state in ("finished", "done")):
                    pending.remove(job)
                    slot = free.pop(0)
                    folder = job.spec.output_dir(args.output)
                    os.makedirs(folder, exist_ok=True)
                    out = open(osp.join(folder, "launcher.out"), "a")
                    proc = subprocess.Popen(job_command(job, args.data, args.output), cwd=REPO,
                                            env=job_env(job, slot[1]), stdout=out, stderr=subprocess.STDOUT)
                    active[proc] = (job, slot, out, time.time())
                    print(f"=== {args.protocol}: {job.label} ({slot[0]}; output in {folder}/launcher.out)", flush=True)
            time.sleep(0.2)
            for proc in [p for p in active if p.poll() is not None]:
                job, slot, out, started = active.pop(proc)
                out.close()
                free.append(slot)
                job.state = "done" if proc.returncode == 0 else "failed"
                word = "finished" if proc.returncode == 0 else "!!! failed"
                print(f"{word}: {job.label} ({time.time() - started:.0f} s) {progress_line(jobs, len(active))}",
                      file=sys.stdout if proc.returncode == 0 else sys.stderr, flush=True)
    finally:
        for proc in active:  # interrupted: stop the runs we started (they resume when run again)
            proc.terminate()


# -------------------- Slurm through submitit ----------------------------------------------------

class SlurmRun:
    """What one Slurm job runs: train.py for one run, its output in the run folder.

    Checkpointable: when Slurm pre-empts or times the job out, submitit asks `checkpoint` and
    requeues the same call; train.py then resumes from the run's last checkpoint."""

    def __call__(self, command, folder, env):
        job_id = os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID", "local"))
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        name = f"slurm-{job_id}_{task}.out" if task else f"slurm-{job_id}.out"
        os.makedirs(folder, exist_ok=True)
        with open(osp.join(folder, name), "a") as out:
            rc = subprocess.run(command, cwd=REPO, env=dict(os.environ, **env), stdout=out,
                                stderr=subprocess.STDOUT).returncode
        if rc:
            raise RuntimeError(f"train.py exited with {rc}; see {osp.join(folder, name)}")
        return rc

    def checkpoint(self, *args, **kwargs):
        import submitit
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def sweep_state_path(args):
    """Where the Slurm launcher remembers its job ids, keyed by what the sweep runs."""
    what = [args.protocol, args.trainer, args.cfg, args.datasets, args.seeds, args.shots, args.shots_list,
            args.source, args.opts, osp.abspath(args.data)]
    key = hashlib.sha256(json.dumps(what).encode()).hexdigest()[:12]
    return osp.join(args.output, ".sweeps", f"{args.protocol}_{args.trainer}_{key}")


ENDED = {"CD", "F", "CA", "TO", "NF", "PR", "OOM", "BF", "DL"}  # squeue codes of jobs that have ended


def slurm_queue():
    """{job id: state code} of the jobs Slurm still runs or will run (array tasks one per line)."""
    proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i %t"], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"squeue failed: {proc.stderr.strip()}")
    codes = dict(line.split()[:2] for line in proc.stdout.splitlines() if line.strip())
    return {job: code for job, code in codes.items() if code not in ENDED}


def slurm_executor(args, folder, dependency=None, count=1):
    import submitit
    executor = submitit.SlurmExecutor(folder=osp.join(folder, "submitit"), max_num_timeout=1)
    params = dict(time=args.time, cpus_per_task=args.cpus, array_parallelism=max(1, count), job_name="clipadapt")
    if args.partition:
        params["partition"] = args.partition
    if args.gpus:
        params["gpus_per_node"] = args.gpus
    if args.mem_gb:
        params["mem"] = f"{args.mem_gb}GB"
    if dependency:
        params["dependency"] = dependency
    executor.update_parameters(**params)
    return executor


def submit(jobs, args, folder, state):
    """Submit `jobs` (one stage) as one job array; records the job ids in `state`."""
    if not jobs:
        return
    after = sorted({state["jobs"][j.after.spec.output_dir(args.output)]["id"].split("_")[0]
                    for j in jobs if j.after is not None and j.after.state == "todo"})
    # afterany: an evaluation starts when its training job ended however it ended; if training
    # failed, the evaluation fails at once naming the missing checkpoint, and is resubmitted with it.
    executor = slurm_executor(args, folder, dependency=("afterany:" + ":".join(after)) if after else None,
                              count=len(jobs))
    commands = [job_command(j, args.data, args.output) for j in jobs]
    folders = [j.spec.output_dir(args.output) for j in jobs]
    envs = [{"CLIPADAPT_PROTOCOL": j.spec.protocol} for j in jobs]
    submitted = executor.map_array(SlurmRun(), commands, folders, envs)
    for job, handle in zip(jobs, submitted):
        entry = state["jobs"].setdefault(job.spec.output_dir(args.output), {"tries": 0})
        entry["id"], entry["tries"], entry["label"] = handle.job_id, entry["tries"] + 1, job.label
    print(f"[sweep] submitted {len(jobs)} {jobs[0].stage} job(s) as Slurm array {submitted[0].job_id.split('_')[0]}"
          + (f" (after {', '.join(after)})" if after else ""), flush=True)


def run_slurm(jobs, args):
    folder = sweep_state_path(args)
    os.makedirs(folder, exist_ok=True)
    state_file = osp.join(folder, "state.json")
    state = runs.read_json(state_file) or {"jobs": {}}
    last_line = ""
    while True:
        queue = slurm_queue()
        to_submit = {"train": [], "test": []}
        running = left = 0
        for job in jobs:
            folder_of_run = job.spec.output_dir(args.output)
            if job.state == "finished" or (job.state != "failed" and runs.is_finished(folder_of_run)):
                job.state = "finished" if job.state == "finished" else "done"
                continue
            if job.message and job.state == "failed":
                continue  # refused at planning (another config in its folder)
            entry = state["jobs"].get(folder_of_run)
            code = queue.get(entry["id"]) if entry else None
            if code is not None:
                running += code in ("R", "CG", "CF")
                left += code not in ("R", "CG", "CF")
                job.state = "todo"
            elif entry is None or entry["tries"] < 2:
                to_submit[job.stage].append(job)
                job.state = "todo"
                left += 1
            else:
                job.state = "failed"
                job.message = f"failed twice; see {folder_of_run}/slurm-*.out"
        for stage in ("train", "test"):
            # an evaluation waits for a training job of this sweep still to be submitted
            submit(to_submit[stage], args, folder, state)
            runs.write_json(state_file, state)
        done = sum(j.state in ("finished", "done") for j in jobs)
        failed = sum(j.state == "failed" for j in jobs)
        line = f"[sweep] done {done} / running {running} / failed {failed} / left {left}"
        if line != last_line:
            print(line, flush=True)
            last_line = line
        if running + left == 0:
            for job in jobs:
                if job.state == "failed":
                    print(f"!!! failed: {job.label}: {job.message}", file=sys.stderr, flush=True)
            return True
        if args.no_wait:
            print("[sweep] --no-wait: the jobs run on; run the same command again for progress and the table.",
                  flush=True)
            return False
        time.sleep(args.poll)


# -------------------- command line --------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(prog="python -m clipadapt.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("protocol", choices=PROTOCOLS)
    parser.add_argument("trainer")
    parser.add_argument("cfg", help="config name: configs/trainers/TRAINER/CFG.yaml ('' for the trainer's default "
                        "for the protocol, from its protocol_defaults.json)")
    parser.add_argument("--datasets", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--shots", type=int, default=16, help="shots for base2new, xd, dg, gzsl")
    parser.add_argument("--shots-list", nargs="+", type=int, default=[1, 2, 4, 8, 16], help="fewshot shot counts")
    parser.add_argument("--source", default="imagenet", help="source dataset of xd and dg")
    parser.add_argument("--data", default=os.environ.get("DATA", "./data"))
    parser.add_argument("--output", default=os.environ.get("OUTPUT", "output"))
    parser.add_argument("--launcher", choices=("local", "parallel", "slurm"), default="local")
    parser.add_argument("--jobs", type=int, default=0,
                        help="parallel: runs at a time (default: one per visible GPU, else 2 processes)")
    parser.add_argument("--no-wait", action="store_true", help="slurm: submit and return")
    parser.add_argument("--partition", default="", help="slurm partition")
    parser.add_argument("--time", type=int, default=240, help="slurm time limit per job, minutes")
    parser.add_argument("--gpus", type=int, default=0, help="slurm GPUs per job")
    parser.add_argument("--cpus", type=int, default=4, help="slurm CPUs per job")
    parser.add_argument("--mem-gb", type=int, default=0, help="slurm memory per job, GB (0: the partition's default)")
    parser.add_argument("--poll", type=float, default=10.0, help="slurm: seconds between progress checks")
    parser.epilog = "KEY VALUE config options for every run follow a lone --."
    return parser


def print_table(args):
    sys.stdout.flush()
    subprocess.run([sys.executable, "parse_test_res.py", "--table", args.protocol, "--root", args.output,
                    "--trainers", args.trainer], cwd=REPO)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = argv[argv.index("--") + 1:] if "--" in argv else []
    args = build_parser().parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.opts = opts
    if len(args.opts) % 2:
        sys.exit(f"error: KEY VALUE options come in pairs; got {args.opts}")
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    args.data, args.output = osp.abspath(args.data), osp.abspath(args.output)
    jobs = plan_jobs(args.protocol, args.trainer, args.cfg, args.datasets, args.seeds, args.shots, args.shots_list,
                     args.opts, args.source)
    check_jobs(jobs, args.output)
    print(f"[sweep] {len(jobs)} runs, {sum(j.state == 'finished' for j in jobs)} finished already; "
          f"launcher {args.launcher}", flush=True)
    if args.launcher == "local":
        run_local(jobs, args)
    elif args.launcher == "parallel":
        run_parallel(jobs, args)
    elif not run_slurm(jobs, args):
        return 0
    print()
    print_table(args)
    failed = [j for j in jobs if j.state in ("failed", "blocked")]
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(j.label for j in failed)} (their logs are under "
              f"{args.output}; run the command again to retry)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
