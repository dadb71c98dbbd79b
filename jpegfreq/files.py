"""Atomic file writes: a reader sees the old file or the new one, never a part of one."""
import os

__all__ = ["atomic_write"]


def atomic_write(path, write, binary: bool = False, newline=None, make_folder: bool = False) -> None:
    """write(f) into a temporary file beside path, then rename it over path.

    binary: open the temporary file "wb" (e.g. for torch.save) instead of "w".  On any
    failure (write raising, a full disk, os.replace failing) the temporary file is removed
    and the old file at path is left as it was.  make_folder: create the folder when missing.
    """
    path = os.fspath(path)
    if make_folder:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"newline": newline})) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
