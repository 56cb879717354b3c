"""A run folder's housekeeping beside the run registry (runs.py): leftovers of killed writes, and
write failures (full or read-only disk) named in one line. Its lock is clipadapt.locks.RunLock."""
import errno
import glob
import os
import os.path as osp

WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def remove_temp_files(directory):
    """Delete what writes killed before their rename left in a run folder (`.tmp-*.part`,
    `checkpoint.tmp`). Only called while holding the folder's lock, so no live writer owns them."""
    removed = []
    for pattern in (".tmp-*.part", "*/.tmp-*.part", "*/checkpoint.tmp"):
        for path in glob.glob(osp.join(glob.escape(directory), pattern)):
            try:
                os.remove(path)
                removed.append(path)
            except OSError:
                pass
    if removed:
        print(f"Removed {len(removed)} temporary file(s) left by an interrupted write, e.g. {removed[0]}")
    return removed


def write_error_message(exc, what="output"):
    """One line for an OSError raised while writing (full disk, quota, read-only), else None."""
    if not isinstance(exc, OSError) or exc.errno not in WRITE_ERRNOS:
        return None
    where = f' "{exc.filename}"' if exc.filename else ""
    advice = {errno.ENOSPC: "free space on that disk", errno.EDQUOT: "free space in your quota",
              errno.EFBIG: "raise the file-size limit (ulimit -f)"}.get(exc.errno, "make it writable")
    return (f"Cannot write {what}{where}: {exc.strerror or os.strerror(exc.errno)}. Files saved before are left as "
            f"they were; {advice} or pass another --output-dir, then run the same command again to resume.")
