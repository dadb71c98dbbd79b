"""What a torch.save file's pickle would import when unpickled, read without unpickling it."""
import pickletools
import zipfile


def pickled_globals(path) -> set:
    """{"module name", ...} of every GLOBAL / STACK_GLOBAL in the file's data.pkl.

    pickletools only walks the opcodes: nothing of the file is imported or called, so a
    test can show that a crafted checkpoint carries a live call (e.g. "posix system")
    without running it.
    """
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        data = z.read(name)
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            found.add(arg)
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
            found.add(f"{strings[-2]} {strings[-1]}")
        if isinstance(arg, str) and "UNICODE" in op.name:
            strings.append(arg)
    return found
