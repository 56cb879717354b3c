"""Optional imports, failed in one line: what needs the package and the command that installs it."""
import importlib


class MissingDependency(ImportError):
    """A package a trainer or dataset needs is not installed (train.py prints it as one line)."""


def require(module, needed_by, package=None):
    """`module` imported, or MissingDependency naming `needed_by` and the pip command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = package or module.split(".")[0]
        raise MissingDependency(f"{needed_by} needs {package}, which is not installed ({exc}). Install it with "
                                f"`pip install {package}`, or run the README's install command again "
                                '(`pip install -e ".[test]"` installs every dependency).') from None
