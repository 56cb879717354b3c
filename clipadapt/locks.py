"""Locks: the feature-cache lock file and the run-folder lock, and the one pid-liveness check.

The feature-cache lock (`file_lock`) must hold between processes on different nodes of a cluster sharing the cache over NFS,
where flock() may be node-local (older NFS clients, Lustre without `-o flock`, some FUSE mounts). So
it is a lock *file* created with O_CREAT|O_EXCL, which is atomic on local filesystems and on NFSv3+.
Its holder writes "host pid" into it and touches it every HEARTBEAT_S seconds while it computes; a
waiter breaks the lock when it is stale: its holder is a dead process on the waiter's own host, or
(for another host) the file was not touched for STALE_AFTER_S seconds. Breaking is a rename to a
unique name, so two waiters cannot both break it and then both compute.
"""
import contextlib
import errno
import fcntl
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


def _lock_is_stale(path, stale_after):
    """True when the lock's holder is gone: a dead process of this host, no heartbeat for a while, or
    no owner written long after the file was created."""
    try:
        age = time.time() - os.stat(path).st_mtime
    except OSError:
        return False  # vanished: look again
    holder = lock_holder(path)
    if holder is None:
        return age > min(EMPTY_GRACE_S, stale_after)
    host, pid = holder
    if host == socket.gethostname() and not pid_alive(pid):
        return True
    return age > stale_after  # the holder touches the file while it works


@contextlib.contextmanager
def file_lock(path, poll=0.2, heartbeat=None, stale_after=None):
    """Hold `path` as a lock file (O_CREAT|O_EXCL; see the module docstring for why not flock)."""
    heartbeat = HEARTBEAT_S if heartbeat is None else heartbeat
    stale_after = STALE_AFTER_S if stale_after is None else stale_after
    os.makedirs(osp.dirname(path) or ".", exist_ok=True)
    owner = f"{socket.gethostname()} {os.getpid()} {uuid.uuid4().hex}\n"
    said_waiting = False
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _lock_is_stale(path, stale_after):
                try:  # only one waiter's rename succeeds; the others find the lock gone or new
                    os.rename(path, f"{path}.stale-{uuid.uuid4().hex[:8]}")
                    print(f"Broke the stale feature-cache lock {path}")
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        raise
                continue
            if not said_waiting:
                holder = lock_holder(path)
                who = f"process {holder[1]} on {holder[0]}" if holder else "a writer that has not named itself yet"
                print(f"Waiting for the feature-cache lock {path}, held by {who} (it computes these features; "
                      "the lock is broken if that process is gone)")
                said_waiting = True
            time.sleep(poll)
            continue
        try:
            with os.fdopen(fd, "w") as f:
                f.write(owner)
        except OSError:  # a full disk: no empty lock file may stay behind to hold up everyone else
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        break
    stop = threading.Event()

    def touch():
        while not stop.wait(heartbeat):
            try:
                os.utime(path)
            except OSError:
                return

    beat = threading.Thread(target=touch, daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        try:
            with open(path) as f:
                mine = f.read() == owner
            if mine:
                os.unlink(path)
        except OSError:
            pass
        for stale in _stale_files(path):
            with contextlib.suppress(OSError):
                os.unlink(stale)


def _stale_files(path):
    folder, name = osp.split(path)
    try:
        return [osp.join(folder, n) for n in os.listdir(folder or ".") if n.startswith(name + ".stale-")]
    except OSError:
        return []


# one writer per run folder

class RunLockedError(RuntimeError):
    """Another live process writes into the same run folder."""


LOCK_NAME = ".train.lock"


class RunLock:
    """An exclusive lock on a run folder, held for the life of the process that trains into it.

    `RUN/.train.lock` holds "pid host". It is also flock'ed, so a killed holder releases it at once
    on a local disk; where flock is unsupported (some network file systems), a lock whose pid is
    gone on this host is stale and taken over. A lock held on another host is refused: its owner
    cannot be checked from here, and the message says to delete the file if that run is gone.
    """

    def __init__(self, directory):
        self.directory = directory
        self.path = osp.join(directory, LOCK_NAME)
        self._handle = None

    def acquire(self):
        os.makedirs(self.directory, exist_ok=True)
        while True:
            handle = open(self.path, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise RunLockedError(self._held_message(*self._read_owner())) from None
            except OSError:  # no flock here (some NFS mounts): judge by pid and host alone
                owner = self._read_owner()
                if owner[0] is not None and self._owner_alive(*owner):
                    handle.close()
                    raise RunLockedError(self._held_message(*owner)) from None
                break
            # The holder before us deletes the file on release; a lock on that deleted file is no lock.
            try:
                if os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self):
        if self._handle is None:
            return
        try:
            os.remove(self.path)
        except OSError:
            pass
        try:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
        except OSError:
            pass
        self._handle.close()
        self._handle = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    def _read_owner(self):
        try:
            with open(self.path) as f:
                pid, host = f.read().split()[:2]
            return int(pid), host
        except (OSError, ValueError):
            return None, None

    @staticmethod
    def _owner_alive(pid, host):
        return host != socket.gethostname() or (pid != os.getpid() and pid_alive(pid))

    def _held_message(self, pid, host):
        who = f"process {pid} on host {host}" if pid is not None else "another process"
        return (f'Run folder "{self.directory}" is in use by {who} (lock file "{self.path}"). Two runs writing '
                "into one folder mix their logs and checkpoints: wait for it to finish, or pass another "
                "--output-dir. If that process is gone, delete the lock file.")
