"""MicroPython side of the simulated board: run in the raw REPL at every boot.

``ReplBoard`` sends this source followed by ``_replboard_boot(<flash dir>)`` and then deletes
the name, so the REPL starts with empty globals as a board's does. Not imported by CPython.

It mounts the flash directory as ``/``, so ``:/main.py`` and ``:main.py`` land in it and
``..`` cannot climb out of it. VfsPosix can take the root itself, but then its ``rename``
joins both paths into one shared buffer and fails, and its ``ilistdir`` leaves out the size
a board's littlefs reports (``mpremote fs ls`` would show 0): so the paths are joined here,
over a root-less VfsPosix.
"""


def _replboard_boot(root):
    import os
    import sys

    import vfs

    class Flash:
        def __init__(self):
            self.posix = vfs.VfsPosix()
            self.cwd = "/"

        def __repr__(self):  # what `mpremote df` prints as the filesystem
            return "<Flash>"

        def _path(self, path):
            if not path.startswith("/"):
                path = self.cwd + "/" + path
            parts = []  # type: list[str]
            for part in path.split("/"):
                if part == "..":
                    if parts:
                        parts.pop()
                elif part and part != ".":
                    parts.append(part)
            return "/" + "/".join(parts)

        def _real(self, path):
            return root + self._path(path)

        def mount(self, readonly, mkfs):
            pass

        def umount(self):
            pass

        def chdir(self, path):
            path = self._path(path)
            if not self.posix.stat(root + path)[0] & 0x4000:
                raise OSError(20)  # ENOTDIR
            self.cwd = path

        def getcwd(self):
            return self.cwd

        def open(self, path, mode):
            return self.posix.open(self._real(path), mode)

        def stat(self, path):
            return self.posix.stat(self._real(path))

        def statvfs(self, path):
            return self.posix.statvfs(self._real(path))

        def mkdir(self, path):
            self.posix.mkdir(self._real(path))

        def rmdir(self, path):
            self.posix.rmdir(self._real(path))

        def remove(self, path):
            self.posix.remove(self._real(path))

        def rename(self, old, new):
            self.posix.rename(self._real(old), self._real(new))

        def ilistdir(self, path):
            real = self._real(path)
            for entry in self.posix.ilistdir(real):
                size = 0 if entry[1] == 0x4000 else self.posix.stat(real + "/" + entry[0])[6]
                yield (entry[0], entry[1], entry[2], size)

    vfs.umount("/")
    vfs.mount(Flash(), "/")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]
