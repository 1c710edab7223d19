"""Loaded at interpreter start-up by the multi-process tests (this folder on PYTHONPATH): when
S2T_HF_WRITE_AUDIT names a folder, every process logs the files it opens for writing, renames
into place or copies, and the programs it starts, to `<folder>/rank-<RANK>.log`, so a test can
prove which process wrote what. Writes made inside C/C++/Rust code (torch.save, safetensors,
Arrow) do not pass through Python's audit events and are not seen."""

import os
import sys

_folder = os.environ.get("S2T_HF_WRITE_AUDIT")
if _folder:
    _log = os.open(os.path.join(_folder, f"rank-{os.environ.get('RANK', 'none')}-{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _record(kind: str, path) -> None:
        os.write(_log, f"{kind}\t{os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else path}\n".encode())

    def _audit(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return
            if (isinstance(mode, str) and any(letter in mode for letter in "wax+")) or (mode is None and flags & _WRITE_FLAGS):
                _record("write", path)
        elif event in ("os.rename", "os.replace", "shutil.copyfile"):
            _record("write", args[1])
        elif event == "subprocess.Popen":
            _record("run", args[0])

    sys.addaudithook(_audit)
