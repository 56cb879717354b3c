"""Where the project keeps what it computes once: user cache (features, built-in model)."""
import os
import os.path as osp


def cache_root():
    """$CLIPADAPT_CACHE, else $XDG_CACHE_HOME/clipadapt, else ~/.cache/clipadapt."""
    if os.environ.get("CLIPADAPT_CACHE"):
        return osp.expanduser(os.environ["CLIPADAPT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or osp.join(osp.expanduser("~"), ".cache")
    return osp.join(base, "clipadapt")
