"""Tar shards in the WebDataset layout: write them from an ImageFolder, read them as samples.

    python -m jpegfreq.shards data/train shards/train --shard-size 1000
        -> shards/train-000000.tar, shards/train-000001.tar, ... and shards/train-classes.json
    JpegLoader("shards/train-{000000..000039}.tar", 64)      # or a list of paths
    JpegLoader("pipe:aws s3 cp s3://bucket/train-000000.tar -", 64, classes=[...])

Layout: each sample is two consecutive members, KEY.jpg (the image file's bytes, as stored;
another image format keeps its extension) and KEY.cls (the label as decimal text).  KEY is
the sample's index in the folder, eight digits, so keys are unique and in the folder's order,
and a sample's crop and flip (the per-(seed, epoch, index) generator) is the same from the
shards as from the folder.  PREFIX-classes.json beside the shards holds the class names and
each shard's sample count (the loader's len()).

Reading: every shard is read once, front to back, by the standard library's tarfile: a local
file header by header (TarFile.next), each member's data in one read at its offset
(TarInfo.offset_data), or "pipe:COMMAND", whose standard output is read as a tar stream (so
object stores work through their own command-line tools).  Training shuffles the shard order
per epoch and the samples through a bounded in-memory buffer; shards are split across ranks
(shard i goes to rank i % world_size of the epoch's order), so evaluation is exact when every
rank reads its own shards.  A member that cannot be used (no image, no or bad label, over the
size limit) and a shard that breaks off (a damaged tar, a command that fails) are recorded
as skipped; reading goes on with the next sample or shard.
"""
import argparse
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zlib
from typing import List, Optional, Tuple

import numpy as np

from .files import atomic_write
from .source import FileRange
from .stats import IMAGE_EXTENSIONS

__all__ = ["expand_braces", "write_shards", "ShardData", "read_shard", "main"]

#: members larger than this are skipped (anything loaded from a shard is untrusted input)
MAX_MEMBER_BYTES = 256 << 20
_IMAGE_SUFFIXES = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)
_BRACE = re.compile(r"\{([^{}]*)\}")


def expand_braces(pattern: str) -> List[str]:
    """'train-{000000..000002}.tar' -> ['train-000000.tar', 'train-000001.tar', ...];
    '{a,b}' lists too; ranges keep the zero padding of their first bound."""
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    body, head, tail = m.group(1), pattern[:m.start()], pattern[m.end():]
    r = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if r:
        a, b = int(r.group(1)), int(r.group(2))
        if b < a:
            raise ValueError(f"brace range {{{body}}} in {pattern!r} runs backwards")
        width = len(r.group(1))
        parts = [f"{i:0{width}d}" for i in range(a, b + 1)]
    elif "," in body:
        parts = body.split(",")
    else:
        raise ValueError(f"cannot expand {{{body}}} in {pattern!r} (use {{A..B}} or {{a,b}})")
    return [head + p + rest for p in parts for rest in expand_braces(tail)]


def _urls(data) -> List[str]:
    if isinstance(data, (str, os.PathLike)):
        data = [os.fspath(data)]
    urls = []
    for d in data:
        d = os.fspath(d)
        urls.extend([d] if d.startswith("pipe:") else expand_braces(d))
    if not urls:
        raise ValueError("no shards given")
    return urls


def _index_path(url: str) -> Optional[str]:
    """PREFIX-classes.json for a shard PREFIX-NNNNNN.tar (None for pipe: sources)."""
    if url.startswith("pipe:"):
        return None
    m = re.fullmatch(r"(.*)-\d+\.tar", url)
    return (m.group(1) if m else os.path.splitext(url)[0]) + "-classes.json"


def _key_suffix(member: str):
    """(sample key, lower-case suffix) of a member name: "a/0001.jpg" -> ("a/0001", "jpg")."""
    base = member.rsplit("/", 1)[-1]
    stem, _, suffix = base.partition(".")
    return member[:len(member) - len(base)] + stem, suffix.lower()


def sample_index(key: str) -> int:
    """The per-sample generator index of a key: the number a shard writer gave it, else a
    stable hash of the key."""
    base = key.rsplit("/", 1)[-1]
    return int(base) if base.isdigit() else zlib.crc32(key.encode())


def _open_stream(url: str):
    """(file object, subprocess or None) of a shard's tar stream."""
    if url.startswith("pipe:"):
        err = tempfile.TemporaryFile()    # a file, not a pipe: a chatty command cannot block
        try:
            proc = subprocess.Popen(url[5:], shell=True, stdout=subprocess.PIPE, stderr=err,
                                    bufsize=_READ_BUFFER)
        except BaseException:
            err.close()
            raise
        proc.errfile = err
        return proc.stdout, proc
    return open(url, "rb"), None   # headers only: the threads read the images


#: bytes read from a command's output per system call: the stream is read in the loop's
#: thread, and each call releases the GIL (a point where a worker waits to take it back),
#: so few large reads rather than an 8 KiB buffer's several per member
_READ_BUFFER = 1 << 20
#: samples a training epoch's shuffle buffer holds before the first goes out (it then
#: grows to shuffle_buffer)
SHUFFLE_START = 100
_BLOCK = tarfile.BLOCKSIZE


def _members(url: str, f, seekable: bool):
    """(member name, size, data or None when over the size limit) of every regular member,
    in archive order, parsed by the standard library's tarfile.  A local file is read by
    the headers' offsets: each header through TarFile.next(), an image member's data is
    left to the loader's threads (a FileRange of the shard, read without the GIL), any
    other member's read at TarInfo.offset_data (no file object per member); a pipe is read
    as a stream (TarFile.extractfile).  Raises tarfile.ReadError when the archive breaks
    off."""
    file_size = os.fstat(f.fileno()).st_size if seekable else 0
    with tarfile.open(fileobj=f, mode="r:" if seekable else "r|*") as tf:
        end = 0
        while True:
            m = tf.next()
            if m is None:
                break
            end = m.offset_data + -(-m.size // _BLOCK) * _BLOCK
            if not m.isfile():
                continue
            if m.size > MAX_MEMBER_BYTES:
                yield m.name, m.size, None
                continue
            if seekable and m.offset_data + m.size > file_size:
                raise tarfile.ReadError(f"member {m.name} is cut short "
                                        f"({max(0, file_size - m.offset_data)} of {m.size} "
                                        "bytes)")
            if seekable and _key_suffix(m.name)[1] in _IMAGE_SUFFIXES:
                yield m.name, m.size, FileRange(url, m.offset_data, m.size, f"{url}:{m.name}")
                f.seek(end)
                continue
            if seekable:
                f.seek(m.offset_data)
                data = f.read(m.size)
                if len(data) != m.size:
                    raise tarfile.ReadError(f"member {m.name} is cut short "
                                            f"({len(data)} of {m.size} bytes)")
                f.seek(end)          # where TarFile.next() reads the next header
            else:
                data = tf.extractfile(m).read()
            yield m.name, m.size, data
        if seekable:
            # tarfile ends quietly at a cut or damaged header; a whole archive ends with a
            # block of zeros there
            f.seek(end)
            block = f.read(_BLOCK)
            if len(block) != _BLOCK or block.count(0) != _BLOCK:
                raise tarfile.ReadError("no end-of-archive marker after the last member "
                                        "(the shard is cut short or damaged)")


#: how gzip, bzip2 and xz streams begin: such shards are read as streams (tarfile "r|*")
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ")


def _compressed(f) -> bool:
    head = f.read(6)
    f.seek(0)
    return head.startswith(_COMPRESSED)


def read_shard(url: str, skipped: list, num_classes: Optional[int] = None):
    """(key, image bytes or FileRange (a local shard's member), label) of one shard, in
    member order; unusable samples (labels
    from num_classes on included) and a stream that breaks off are appended to ``skipped``
    as (name, reason)."""
    f, proc = _open_stream(url)
    count, broken, ended = 0, None, False
    try:
        key, parts = None, {}

        def finish():
            nonlocal count
            if key is None:
                return None
            if None in parts.values():   # an oversized member, recorded already
                return None
            image = next((parts[s] for s in _IMAGE_SUFFIXES if s in parts), None)
            name = f"{url}:{key}"
            if image is None:
                skipped.append((name, "no image member (KEY.jpg) in the shard"))
                return None
            cls = parts.get("cls")
            try:
                label = int(cls.decode("ascii").strip())
                if label < 0:
                    raise ValueError
            except (AttributeError, ValueError, UnicodeDecodeError):
                skipped.append((name, "no valid label member (KEY.cls, a non-negative "
                                      "integer)"))
                return None
            if num_classes is not None and label >= num_classes:
                skipped.append((name, f"label {label} is not one of the {num_classes} classes"))
                return None
            count += 1
            return key, image, label

        try:
            seekable = proc is None and not _compressed(f)
            for mname, size, data in _members(url, f, seekable):
                k, suffix = _key_suffix(mname)
                if k != key:
                    s = finish()
                    if s is not None:
                        yield s
                    key, parts = k, {}
                if data is None:
                    skipped.append((f"{url}:{mname}", f"member of {size} bytes exceeds "
                                                      f"the limit of {MAX_MEMBER_BYTES}"))
                parts[suffix] = data      # None: the sample is skipped
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            broken = f"unreadable tar stream after {count} samples: {type(e).__name__}: {e}"
            if "cls" not in parts or not any(x in parts for x in _IMAGE_SUFFIXES):
                key = None    # a sample the break cut in two: the break is its record
        s = finish()          # the last sample (whole, when the archive broke off after it)
        if s is not None:
            yield s
        ended = True
    finally:
        if proc is not None and ended:
            try:   # the archive's end: take the padding after it so the command can finish
                for _ in range(16):
                    if not f.read(1 << 16):
                        break
            except OSError:
                pass
        f.close()
        if proc is not None:
            killed = False
            try:
                proc.wait(timeout=30 if ended else 0)
            except subprocess.TimeoutExpired:  # the loop stopped early, or a command that hangs
                proc.kill()
                killed = True
            rc = proc.wait()
            proc.errfile.seek(0)
            err = proc.errfile.read().decode(errors="replace").strip()
            proc.errfile.close()
            if rc != 0 and ended and not killed:
                broken = f"command exited with status {rc}" + (
                    f": {err[-300:]}" if err else "") + (f" ({broken})" if broken else "")
        if broken:
            skipped.append((url, broken))


def shuffled(stream, rng: np.random.Generator, size: int, start: Optional[int] = None):
    """The items of ``stream`` through a shuffle buffer of ``size`` items (a training epoch's
    samples).  The first goes out once ``start`` (default min(size, SHUFFLE_START)) are held,
    not after the whole buffer is read, so decoding begins early in every epoch; then one
    goes out for every two that come in until ``size`` are held, then one for each."""
    start = min(size, SHUFFLE_START) if start is None else min(size, start)
    buf, out = [], False
    draws, d = (), 0     # uniform draws, made 1024 at a time (one numpy call each)
    for s in stream:
        buf.append(s)
        if len(buf) < start:
            continue
        if len(buf) < size:      # growing: every other arrival sends one out
            out = not out
            if not out:
                continue
        if d == len(draws):
            draws, d = rng.random(1024).tolist(), 0
        j = int(draws[d] * len(buf))
        d += 1
        buf[j], buf[-1] = buf[-1], buf[j]
        yield buf.pop()
    for j in rng.permutation(len(buf)).tolist():
        yield buf[j]


class ShardData:
    """Tar shards as the loader's (index, bytes, name, label) items (see the module doc).

    data: a path, brace pattern or "pipe:COMMAND", or a list of them.
    classes: the class names, or the path of a PREFIX-classes.json (default: the one beside
        the first shard; pipe: sources have none, so their loader has classes None unless
        given).  shuffle_buffer: samples held to shuffle when training (the first go out
        once SHUFFLE_START are held; the buffer then grows to its size).
    """

    def __init__(self, data, classes=None, shuffle_buffer: int = 1000):
        self.urls = _urls(data)
        self.shuffle_buffer = max(1, int(shuffle_buffer))
        self.counts = {}
        index = classes if isinstance(classes, (str, os.PathLike)) else None
        if classes is None:
            index = _index_path(self.urls[0])
            if index is not None and not os.path.isfile(index):
                missing = [u for u in self.urls if not u.startswith("pipe:")
                           and not os.path.isfile(u)]
                if missing:
                    raise FileNotFoundError(f"no such shard: {missing[0]}")
                index = None
        self.classes = list(classes) if classes is not None and index is None else None
        if index is not None:
            try:
                with open(index) as f:
                    meta = json.load(f)
                self.classes = [str(c) for c in meta["classes"]]
                self.counts = {str(k): int(v) for k, v in meta.get("shards", {}).items()}
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{index}: not a shard class list ({type(e).__name__}: {e})") \
                    from None
        self.skipped: List[Tuple[str, str]] = []

    def __len__(self):
        n = self._count(self.urls)
        return 0 if n is None else n

    def _count(self, urls):
        try:
            return sum(self.counts[os.path.basename(u)] for u in urls)
        except KeyError:
            return None

    def shards(self, train, seed, epoch, rank, world):
        """This rank's shards of the epoch, in reading order."""
        from .datasets import epoch_rng
        urls = list(self.urls)
        if train:
            order = epoch_rng(seed, epoch, 2 ** 64 - 2).permutation(len(urls))
            urls = [urls[int(i)] for i in order]
        return urls[rank::world]

    def count(self, train, rank, world, seed=0, epoch=0):
        n = self._count(self.shards(train, seed, epoch, rank, world))
        if n is None:
            raise TypeError("the length of these shards is unknown (no sample counts in a "
                            "PREFIX-classes.json beside them)")
        return n

    def items(self, train, seed, epoch, rank, world):
        from .datasets import epoch_rng
        n_classes = None if self.classes is None else len(self.classes)
        stream = ((sample_index(k), data, f"{url}:{k}", label)
                  for url in self.shards(train, seed, epoch, rank, world)
                  for k, data, label in read_shard(url, self.skipped, n_classes))
        if not train:
            yield from stream
            return
        yield from shuffled(stream, epoch_rng(seed, epoch, 2 ** 64 - 3), self.shuffle_buffer)

    def close(self):
        pass


def _add(tf, name: str, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    tf.addfile(info, io.BytesIO(data))


def write_shards(folder, prefix, shard_size: int = 1000, progress: bool = True) -> List[str]:
    """Write the ImageFolder ``folder`` as PREFIX-000000.tar, ... (shard_size samples each)
    and PREFIX-classes.json; returns the shard paths.  Each shard is written to a temporary
    name and renamed, so a shard that exists is complete."""
    from tqdm import tqdm
    from .datasets import list_samples
    if int(shard_size) < 1:
        raise ValueError(f"shard size must be at least 1, not {shard_size}")
    samples, classes = list_samples(folder)
    d = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(d, exist_ok=True)
    paths, counts = [], {}
    n_shards = -(-len(samples) // shard_size)
    with tqdm(total=len(samples), unit="img", disable=not progress, file=sys.stderr,
              desc="shards") as bar:
        for s in range(n_shards):
            path = f"{prefix}-{s:06d}.tar"
            chunk = samples[s * shard_size:(s + 1) * shard_size]

            def write(out, s=s, chunk=chunk):
                with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tf:
                    for j, (p, label) in enumerate(chunk):
                        key = f"{s * shard_size + j:08d}"
                        ext = os.path.splitext(p)[1].lower().lstrip(".")
                        ext = "jpg" if ext in ("jpg", "jpeg", "jpe", "jfif") else ext
                        with open(p, "rb") as f:
                            _add(tf, f"{key}.{ext}", f.read())
                        _add(tf, f"{key}.cls", str(label).encode())
                        bar.update(1)

            atomic_write(path, write, binary=True)
            paths.append(path)
            counts[os.path.basename(path)] = len(chunk)
    meta = {"classes": classes, "shards": counts,
            "pattern": f"{os.path.basename(prefix)}-{{{0:06d}..{n_shards - 1:06d}}}.tar"}
    index = f"{prefix}-classes.json"
    atomic_write(index, lambda f: json.dump(meta, f, indent=1))
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m jpegfreq.shards",
                                description="Write an ImageFolder (CLASS/IMAGE) as tar shards "
                                            "in the WebDataset layout.")
    p.add_argument("folder", help="ImageFolder split folder (CLASS/IMAGE)")
    p.add_argument("prefix", help="output prefix: PREFIX-000000.tar, ..., PREFIX-classes.json")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard (1000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    if a.shard_size < 1:
        p.error("--shard-size must be at least 1")
    try:
        paths = write_shards(a.folder, a.prefix, a.shard_size, progress=not a.no_progress)
    except FileNotFoundError as e:
        p.error(str(e))
    n = len(paths)
    print(f"{n} shard{'s' if n != 1 else ''}: {a.prefix}-{{000000..{n - 1:06d}}}.tar "
          f"and {a.prefix}-classes.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
