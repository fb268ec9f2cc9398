"""Resume records: which scenes are done, with which model, inputs and outputs.

A finished scene gets an entry in ``.d2geo-region/done/<id>.json`` with the sha256 of its
inputs, of the model (weights, config and every option that changes outputs: :func:`model_key`)
and of its outputs; a rerun skips the scenes whose entry matches. The output folder is held
by one run at a time (:class:`OutputLock`).
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
from typing import Sequence

from d2geo.data.files import TMP_MARK, atomic_path

from .inputs import RegionRequestError, RegionScene

__all__ = ["scene_is_done", "record_done", "done_path", "model_key", "remove_stale_temporaries", "STATE_DIR",
           "OutputLock", "OutputLockError", "run_key", "state_dict_digest",
           "sha256_file"]

#: hidden folder in the output folder with the manifest entries, STAC VRTs, scratch files and the lock
STATE_DIR = ".d2geo-region"


def sha256_file(path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def done_path(out_dir: str, scene_id: str) -> str:
    return os.path.join(out_dir, STATE_DIR, "done", scene_id + ".json")


def _input_record(path: str, previous: dict | None = None) -> dict:
    st = os.stat(path)
    if previous and previous.get("size") == st.st_size and previous.get("mtime_ns") == st.st_mtime_ns:
        return dict(previous)  # unchanged file: the recorded hash stands
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path)}


def scene_is_done(scene: RegionScene, out_dir: str, model_key: str) -> bool:
    """Whether ``scene``'s manifest entry matches its inputs, the model and its outputs."""
    try:
        with open(done_path(out_dir, scene.id), encoding="utf-8") as f:
            entry = json.load(f)
    except (OSError, ValueError):
        return False
    if entry.get("model") != model_key or sorted(entry.get("inputs", {})) != sorted(scene.sources):
        return False
    for path, rec in entry["inputs"].items():
        if not os.path.isfile(path) or _input_record(path, rec)["sha256"] != rec["sha256"]:
            return False
    for rel, digest in entry.get("outputs", {}).items():
        p = os.path.join(out_dir, rel)
        if not os.path.isfile(p) or sha256_file(p) != digest:
            return False
    return True


def record_done(scene: RegionScene, out_dir: str, model_key: str, outputs: dict, seconds: float) -> None:
    files = [p for p in outputs.values()]
    if "class_map" in outputs:
        files.append(outputs["class_map"] + ".aux.xml")
    entry = {"scene": scene.id, "model": model_key, "inputs": {p: _input_record(p) for p in scene.sources},
             "outputs": {os.path.relpath(p, out_dir): sha256_file(p) for p in files},
             "km2": scene.km2, "seconds": round(seconds, 3)}
    path = done_path(out_dir, scene.id)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(entry, f, indent=1, sort_keys=True)


def model_key(weights: str | None, config_text: str, overrides: Sequence[str], opts) -> str:
    """sha256 of everything that changes the outputs: weights, config, overrides, options."""
    h = hashlib.sha256()
    h.update((sha256_file(weights) if weights and os.path.isfile(weights) else str(weights)).encode())
    h.update(config_text.encode())
    h.update(json.dumps([list(overrides), opts.output_key()], sort_keys=True, default=str).encode())
    return h.hexdigest()


def remove_stale_temporaries(out_dir: str) -> int:
    """Delete temporary files a killed run left in ``out_dir`` (names with TMP_MARK)."""
    n = 0
    for d in (out_dir, os.path.join(out_dir, STATE_DIR, "tmp"), os.path.join(out_dir, STATE_DIR, "done"),
              os.path.join(out_dir, STATE_DIR, "stac")):
        for p in glob.glob(os.path.join(d, f".*{TMP_MARK}*")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
                n += 1
    return n


class OutputLockError(RegionRequestError):
    """Another run holds the output folder."""


class OutputLock:
    """One writer per output folder: ``.d2geo-region/lock`` holds the writer's pid and host.

    :meth:`acquire` refuses (:class:`OutputLockError`, naming the holder) while another live
    process holds the folder; a lock whose process is gone (same host, no such pid) is taken
    over, and only then are temporaries left in the folder removed (their writer is gone).
    A lock written on another host cannot be checked: it is refused with the file to delete
    if that run is over.
    """

    def __init__(self, out_dir: str):
        self.out_dir = os.path.abspath(out_dir)
        self.path = os.path.join(self.out_dir, STATE_DIR, "lock")
        self.held = False

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def acquire(self) -> "OutputLock":
        import socket

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    with open(self.path, encoding="utf-8") as f:
                        holder = json.load(f)
                except (OSError, ValueError):
                    holder = {}
                pid, host = holder.get("pid"), holder.get("host")
                if host == me["host"] and isinstance(pid, int) and pid != me["pid"] and not self._alive(pid):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)  # its run is gone: take the folder over
                    continue
                raise OutputLockError(
                    f"another run (pid {pid} on {host}) is writing to {self.out_dir}: wait for it to finish or "
                    f"choose another --output-dir" + ("" if host == me["host"] else
                                                      f" (if that run is over, delete {self.path})")) from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise OutputLockError(f"could not take the lock {self.path}: delete it if no run writes to {self.out_dir}")

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _config_text(cfg) -> str:
    """A canonical text of a resolved LazyConfig (imports followed, overrides applied)."""
    def name(o):
        if hasattr(o, "__module__") and hasattr(o, "__qualname__"):
            return f"{o.__module__}.{o.__qualname__}"
        return repr(o)

    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(cfg, (DictConfig, ListConfig)):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return json.dumps(cfg, sort_keys=True, default=name)


def state_dict_digest(model) -> str:
    """sha256 of a model's weights as loaded (names, dtypes, shapes and values)."""
    h = hashlib.sha256()
    for k, v in sorted(getattr(model, "module", model).state_dict().items()):
        t = v.detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}:{t.dtype}:{tuple(v.shape)};".encode())
        h.update(t.view(__import__("torch").uint8).numpy().tobytes())
    return h.hexdigest()


def run_key(cfg, model, opts) -> str:
    """sha256 of everything that changes the outputs: the resolved config (every imported config
    file and override included), the weights as loaded into ``model`` (so that a moving
    ``hf://...@main`` or a file rewritten in place counts) and the options."""
    h = hashlib.sha256()
    h.update(_config_text(cfg).encode())
    h.update(state_dict_digest(model).encode())
    h.update(json.dumps(opts.output_key(), sort_keys=True, default=str).encode())
    return h.hexdigest()
