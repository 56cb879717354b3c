"""Name -> class registries (Dassl/fvcore style), with a "did you mean" on a miss."""
import difflib


class Registry:
    def __init__(self, name):
        self._name = name
        self._obj_map = {}

    def _do_register(self, name, obj, force=False):
        if name in self._obj_map and not force:
            raise KeyError(f'An object named "{name}" was already registered in the "{self._name}" registry')
        self._obj_map[name] = obj

    def register(self, obj=None, force=False):
        if obj is None:
            def wrapper(fn_or_class):
                self._do_register(fn_or_class.__name__, fn_or_class, force=force)
                return fn_or_class
            return wrapper
        self._do_register(obj.__name__, obj, force=force)
        return obj

    def get(self, name):
        if name not in self._obj_map:
            raise KeyError(unknown_name_message(self._name, name, self.registered_names()))
        return self._obj_map[name]

    def registered_names(self):
        return list(self._obj_map.keys())

    def __contains__(self, name):
        return name in self._obj_map


def unknown_name_message(kind, name, available):
    """One sentence naming the unknown name, the closest registered one and all of them."""
    lowered = {a.lower(): a for a in available}
    if str(name).lower() in lowered:  # a wrong case beats any fuzzy match ("Coop" is CoOp, not CoCoOp)
        close = [lowered[str(name).lower()]]
    else:
        close = difflib.get_close_matches(str(name), list(available), n=1, cutoff=0.4)
    hint = f' Did you mean "{close[0]}"?' if close else ""
    return (f'Unknown {kind} "{name}".{hint} Registered: {", ".join(sorted(available)) or "(none)"}')


def check_availability(requested, available):
    if requested not in available:
        raise ValueError(unknown_name_message("name", requested, available))
