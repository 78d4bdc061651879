"""Output files that appear whole or not at all.

An :class:`AtomicOutput` is a temporary file (or directory, for a Zarr store)
beside the output path, in the same directory and so on the same file system.
Writers fill the temporary; :meth:`AtomicOutput.commit` flushes it to the disk
(``fsync``) and renames it over the output path, and :meth:`AtomicOutput.discard`
removes it. A run that fails, is interrupted (``SIGINT``, ``SIGTERM``) or
runs out of space therefore leaves either nothing at the output path or the
file that was there before, byte for byte: git's lockfile and rsync's
temporaries, the recipe of ``STYLE.md`` ("Files that never lose data").

Every failure to create, write or rename is an :class:`OutputError`: an
``OSError`` whose message names the output path (not the temporary) and the
cause in words ("no space left on device", "permission denied").
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import sys
import threading
from pathlib import Path

#: Marks the temporaries: ``.<name>.gpuconv-<random>.tmp`` beside the output.
TEMPORARY_MARK = ".gpuconv-"

_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EFBIG: "file too large (the file system's or the process's file-size limit, RLIMIT_FSIZE)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EISDIR: "it is a directory",
    errno.ENAMETOOLONG: "file name too long",
    errno.EIO: "input/output error",
}


def _token() -> str:
    """Eight random hex digits for a temporary name (``secrets.token_hex(4)`` without
    importing secrets, hmac and hashlib: 3 ms of every process's start-up)."""
    return os.urandom(4).hex()


class OutputError(OSError):
    """The output cannot be written; ``str()`` names the output path and the cause."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code

    def __str__(self) -> str:
        return str(self.args[0])


def describe_os_error(error: OSError) -> str:
    """The cause of an ``OSError`` in words, without errno numbers or temporary names.

    Examples
    --------
    >>> describe_os_error(OSError(errno.ENOSPC, "No space left on device"))
    'no space left on device'
    """
    if error.errno in _CAUSES:
        return _CAUSES[error.errno]
    text = error.strerror or str(error) or type(error).__name__
    return text[0].lower() + text[1:]


def output_error(path, error: OSError) -> OutputError:
    """Wrap ``error`` (raised while writing ``path``) as an :class:`OutputError`."""
    if isinstance(error, OutputError):
        return error
    return OutputError(f"cannot write {path}: {describe_os_error(error)}", error.errno)


def check_destination(path) -> None:
    """Raise :class:`OutputError` now if ``path`` cannot be created: no directory, not a directory.

    Permission and space are found out by creating the temporary; this gives
    the clearer messages for the commonest mistakes.
    """
    path = Path(path)
    parent = path.parent
    if not parent.exists():
        # Walk up to the first missing or non-directory component.
        missing = parent
        while not missing.parent.exists() and missing.parent != missing:
            missing = missing.parent
        if missing.parent.exists() and not missing.parent.is_dir():
            raise OutputError(
                f"cannot write {path}: {missing.parent} is a file, not a directory", errno.ENOTDIR
            )
        raise OutputError(f"cannot write {path}: directory {parent} does not exist", errno.ENOENT)
    if not parent.is_dir():
        raise OutputError(
            f"cannot write {path}: {parent} is a file, not a directory", errno.ENOTDIR
        )


@contextlib.contextmanager
def signals_held():
    """Hold SIGINT, SIGTERM and SIGHUP for the block (main thread, POSIX), deliver them after.

    A rename or a clean-up is then never cut in half by Ctrl-C.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "pthread_sigmask"
    ):
        yield
        return
    held = {
        getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
    }
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of dirty pages, do not wait


@functools.cache
def _linux_libc_function(name: str, *argument_types: str):
    """libc's function ``name`` (Linux), typed by ctypes type names, or None where there is
    none (another system, an older C library)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # here: only the callers that need it pay its import

    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = [getattr(ctypes, type_name) for type_name in argument_types]
    function.restype = ctypes.c_int
    return function


def _sync_file_range():
    """libc's ``sync_file_range`` (Linux), or None where there is none."""
    return _linux_libc_function("sync_file_range", "c_int", "c_int64", "c_int64", "c_uint")


def start_writeback(descriptor: int, offset: int, length: int) -> None:
    """Start writing ``length`` bytes at ``offset`` of a file to the disk; do not wait.

    Why: :meth:`AtomicOutput.commit` flushes the whole file (``fsync``) before the rename.
    When a streamed 256 MiB output was still all dirty at the end, that ``fsync`` alone
    took 0.12 s (2 cores, ext4); with the writeback started band by band it overlaps
    the filtering, and the final ``fsync`` finds almost nothing left to write. Only a
    hint: where there is no ``sync_file_range`` (not Linux), or it fails, nothing
    happens, and the commit's ``fsync`` still makes the file durable.
    """
    function = _sync_file_range()
    if function is not None:
        function(descriptor, offset, length, _SYNC_FILE_RANGE_WRITE)


_RENAME_EXCHANGE = 2  # <linux/fs.h>: swap two existing paths atomically
_AT_FDCWD = -100


def _renameat2():
    """libc's ``renameat2`` (Linux, glibc 2.28 and later), or None where there is none."""
    return _linux_libc_function("renameat2", "c_int", "c_char_p", "c_int", "c_char_p", "c_uint")


def exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step (``renameat2(RENAME_EXCHANGE)``).

    Returns False, having changed nothing, where the system or the file system cannot
    (not Linux, an old C library, a file system without it); raises any other error.
    """
    function = _renameat2()
    if function is None:
        return False
    import ctypes

    if function(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE):
        code = ctypes.get_errno()
        if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            return False
        raise OSError(code, os.strerror(code), str(second))
    return True


def _fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError as error:  # some file systems cannot fsync a directory
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF) or path.is_file():
            raise
    finally:
        os.close(descriptor)


def sync_directory(path) -> None:
    """``fsync`` a directory, so that the renames into it reach the disk (best effort)."""
    with contextlib.suppress(OSError):
        _fsync_path(Path(path))


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for root, _, files in os.walk(path):
            for name in files:
                _fsync_path(Path(root) / name)
            _fsync_path(Path(root))
    else:
        _fsync_path(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        import shutil  # here: 2 ms of every process's start-up otherwise

        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class AtomicOutput:
    """A temporary beside ``path``, renamed over it by :meth:`commit`, removed by :meth:`discard`.

    ``directory=True`` makes an empty temporary directory (a Zarr store),
    else an empty file. ``sync_directory=False`` leaves out the ``fsync`` of
    the output's directory after the rename (the file itself is still
    flushed before it): for a caller that writes many files into one
    directory and flushes it once at the end (``gpuconv apply --out-dir``).
    Each file is still whole or absent; only the rename's durability waits.
    ``durable=False`` leaves out every ``fsync``, as ``cp``, ``cv2.imwrite`` and libvips
    do: other processes still see the old file or the whole new one, never a part, but
    a power failure soon after the commit may leave the output incomplete or empty (the
    disk's write time is saved: 0.2-0.5 s for 256 MiB on a virtual disk). It also
    replaces an existing file by swapping the two names (:func:`exchange`, Linux), so
    that ext4 does not write the new file out before a rename over the old one. Creating it
    raises :class:`OutputError` for a missing directory, no permission, a read-only
    file system.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.bin"
    >>> output = AtomicOutput(target)
    >>> _ = output.temporary.write_bytes(b"whole")
    >>> target.exists()
    False
    >>> output.commit()
    >>> target.read_bytes(), output.temporary.exists()
    (b'whole', False)
    """

    def __init__(
        self, path, *, directory: bool = False, sync_directory: bool = True, durable: bool = True
    ):
        self.path = Path(path)
        self.directory = directory
        self.sync_directory = sync_directory
        self.durable = durable
        self.committed = False
        check_destination(self.path)
        if self.path.is_dir() and not directory:
            raise OutputError(f"cannot write {self.path}: it is a directory", errno.EISDIR)
        name = f".{self.path.name}{TEMPORARY_MARK}{_token()}.tmp"
        self.temporary = self.path.with_name(name)
        try:
            if directory:
                os.mkdir(self.temporary)
            else:
                os.close(os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except OSError as error:
            raise output_error(self.path, error) from None

    def commit(self) -> None:
        """Flush the temporary to the disk (if durable) and rename it over the output path."""
        if self.committed:
            return
        try:
            if self.durable:
                _fsync_tree(self.temporary)
            with signals_held():
                self._replace()
                self.committed = True
            if self.sync_directory and self.durable:
                with contextlib.suppress(OSError):
                    _fsync_path(self.path.parent)  # the rename itself reaches the disk
        except OSError as error:
            self.discard()
            raise output_error(self.path, error) from None

    def _replace(self) -> None:
        occupied = self.path.exists() or self.path.is_symlink()
        if (
            not self.durable
            and not self.directory
            and occupied
            and self.path.is_file()  # a link to one too: the link is swapped, as replaced
            and exchange(self.temporary, self.path)
        ):
            # Why not os.replace: renaming over an existing file makes ext4 (auto_da_alloc)
            # write the new file's unwritten pages out first, 0.16-0.22 s for 256 MiB here,
            # the disk wait durable=False leaves out. Swapping the two names asks for no
            # writeback; readers still see the old file or the new one. The temporary's
            # name now holds the old file: remove it.
            _remove(self.temporary)
            return
        if not (self.directory or (occupied and self.path.is_dir() and not self.path.is_symlink())):
            os.replace(self.temporary, self.path)  # atomic: the old file or the new one
            return
        # A directory (Zarr store) cannot be renamed over a non-empty one: move
        # the old one aside, rename the new one in, then delete the old one.
        aside = None
        if occupied:
            aside = self.path.with_name(f".{self.path.name}{TEMPORARY_MARK}old-{_token()}")
            os.rename(self.path, aside)
        try:
            os.rename(self.temporary, self.path)
        except OSError:
            if aside is not None:
                os.rename(aside, self.path)
            raise
        if aside is not None:
            _remove(aside)

    def discard(self) -> None:
        """Remove the temporary (nothing happens at the output path); safe to call twice."""
        if self.committed:
            return
        with signals_held():
            _remove(self.temporary)
