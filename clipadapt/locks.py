"""Locks: one lock-file primitive for the feature cache and the run folder, and the one pid-liveness check.

A lock must hold between processes on different nodes of a cluster sharing a disk over NFS, where
flock() may be node-local (older NFS clients, Lustre without `-o flock`, some FUSE mounts). So a lock
is a *file* created with O_CREAT|O_EXCL, which is atomic on local filesystems and on NFSv3+. Its
holder writes "host pid token" into it and touches it every HEARTBEAT_S seconds while it holds it;
the lock is stale when its holder is a dead process on this host or (for another host) the file was
not touched for STALE_AFTER_S seconds. Breaking a stale lock is a rename to a unique name, so two
processes cannot both break it and then both go on.

`file_lock` waits for the lock (the feature cache: the holder computes what the waiter needs);
`RunLock` refuses at once (a second writer into a run folder is a mistake to name, not to wait out).
"""
import contextlib
import errno
import os
import os.path as osp
import socket
import threading
import time
import uuid

HEARTBEAT_S = 10.0
STALE_AFTER_S = 120.0
# A holder writes its owner line right after creating the file; an empty or unreadable lock older than
# this was left by a writer that died (or hit a full disk) in between.
EMPTY_GRACE_S = 10.0


def pid_alive(pid):
    """True when process `pid` of this host exists (also when another user owns it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_holder(path):
    """(host, pid) written in a lock file; None when it is empty or unreadable."""
    try:
        with open(path) as f:
            host, pid = f.read().split()[:2]
        return host, int(pid)
    except (OSError, ValueError):
        return None


class LockFile:
    """The lock file `path`, named `what` in messages: taken with `try_acquire`, kept alive by a
    heartbeat thread until `release`."""

    def __init__(self, path, what, heartbeat=None, stale_after=None):
        self.path, self.what = path, what
        self.heartbeat = HEARTBEAT_S if heartbeat is None else heartbeat
        self.stale_after = STALE_AFTER_S if stale_after is None else stale_after
        self._owner = None
        self._stop = None
        self._beat = None

    def try_acquire(self):
        """Take the lock (breaking a stale one); False when a live holder has it."""
        os.makedirs(osp.dirname(self.path) or ".", exist_ok=True)
        owner = f"{socket.gethostname()} {os.getpid()} {uuid.uuid4().hex}\n"
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                break
            except FileExistsError:
                if not self.is_stale():
                    return False
                try:  # only one rename succeeds; the others find the lock gone or new
                    os.rename(self.path, f"{self.path}.stale-{uuid.uuid4().hex[:8]}")
                    print(f"Broke the stale {self.what} {self.path}")
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        raise
        try:
            with os.fdopen(fd, "w") as f:
                f.write(owner)
        except OSError:  # a full disk: no empty lock file may stay behind to hold up everyone else
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            raise
        self._owner = owner
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._touch, args=(self._stop,), daemon=True)
        self._beat.start()
        return True

    def is_stale(self):
        """True when the holder is gone: a dead process of this host, no heartbeat for a while, or no
        owner written long after the file was created."""
        try:
            age = time.time() - os.stat(self.path).st_mtime
        except OSError:
            return False  # vanished: look again
        holder = lock_holder(self.path)
        if holder is None:
            return age > min(EMPTY_GRACE_S, self.stale_after)
        host, pid = holder
        if host == socket.gethostname() and not pid_alive(pid):
            return True
        return age > self.stale_after  # the holder touches the file while it holds it

    def holder_text(self):
        holder = lock_holder(self.path)
        return f"process {holder[1]} on host {holder[0]}" if holder else "a process that has not named itself yet"

    def _touch(self, stop):
        while not stop.wait(self.heartbeat):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self):
        if self._owner is None:
            return
        self._stop.set()
        self._beat.join()
        try:
            with open(self.path) as f:
                mine = f.read() == self._owner
            if mine:
                os.unlink(self.path)
        except OSError:
            pass
        self._owner = None
        folder, name = osp.split(self.path)
        with contextlib.suppress(OSError):
            for stale in os.listdir(folder or "."):
                if stale.startswith(name + ".stale-"):
                    with contextlib.suppress(OSError):
                        os.unlink(osp.join(folder, stale))


@contextlib.contextmanager
def file_lock(path, poll=0.2, heartbeat=None, stale_after=None):
    """Hold the feature-cache lock file `path`, waiting while a live holder computes."""
    lock = LockFile(path, "feature-cache lock", heartbeat, stale_after)
    said_waiting = False
    while not lock.try_acquire():
        if not said_waiting:
            print(f"Waiting for the feature-cache lock {path}, held by {lock.holder_text()} (it computes these "
                  "features; the lock is broken if that process is gone)")
            said_waiting = True
        time.sleep(poll)
    try:
        yield
    finally:
        lock.release()


# one writer per run folder

class RunLockedError(RuntimeError):
    """Another live process writes into the same run folder."""


LOCK_NAME = ".train.lock"


class RunLock:
    """The run folder's lock `RUN/.train.lock`, held for the life of the process that writes into it.

    A second writer is refused at once. The lock of a killed run is taken over: on this host when
    its pid is gone, from another host when its heartbeat has stopped for STALE_AFTER_S seconds.
    """

    def __init__(self, directory):
        self.directory = directory
        self.path = osp.join(directory, LOCK_NAME)
        self._lock = LockFile(self.path, "run-folder lock")

    def acquire(self):
        if not self._lock.try_acquire():
            raise RunLockedError(
                f'Run folder "{self.directory}" is in use by {self._lock.holder_text()} (lock file "{self.path}"). '
                "Two runs writing into one folder mix their logs and checkpoints: wait for it to finish, or pass "
                f"another --output-dir. If that process is gone, delete the lock file (it is taken over by itself "
                f"{STALE_AFTER_S:.0f} s after its holder stops).")
        return self

    def release(self):
        self._lock.release()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
