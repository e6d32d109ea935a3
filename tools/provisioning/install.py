"""``ecoin-provision flash`` and ``deploy-sim``: a bundle onto a device, never by accident
over coins it already holds.

Rules, for a board and a simulator alike:

- only a complete, unused bundle goes out (a bundle a simulator has run in has spent coins);
- a target that already holds a coin store is replaced only when confirmed (prompt or
  ``--yes``): its unused coins leave the device, and re-flashing the same coins would make
  it send coins the bank has already seen;
- deploying one bundle onto a second device is confirmed too (both would hold the same coins);
- the new store keeps the device's top-up counter when the old store was the same device's
  (the bank refuses counters it has seen);
- ``state.bin`` goes last, atomically; then sizes (all files) and SHA-256 (the coin store)
  are checked on the target.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any

from ecoin.common.files import write_atomic as write_file
from ecoin.tools.provisioning import flash

from . import bundle as bundles
from .common import Confirm, Progress, ProvisionError, require
from .targets import Store, Target, read_store

STORE = ("coins.0.bin", "state.bin")  # the coin store a bundle brings


def find_bundle(out_dir: str | Path, device_id: str | None = None) -> Path:
    """The bundle of ``device_id`` under ``out_dir``, or the only bundle there."""
    out = Path(out_dir)
    if device_id:
        bundles.check_names(device_id)
        path = out / device_id
        if not (path / bundles.META).exists():
            raise ProvisionError(f"no bundle for {device_id} in {out}; run `ecoin-provision new {device_id}`")
        return path
    found = sorted(p.parent for p in out.glob(f"*/{bundles.META}")) if out.is_dir() else []
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise ProvisionError(f"{out} holds {len(found)} bundles ({names}); choose one with --device ID")
    return found[0]


def _check_unused(bundle: Path) -> flash.FlashState:
    state = flash.read_state(bundle)
    if state.next or state.pending_coin or (bundle / "doubt.bin").exists():
        raise ProvisionError(
            f"the coins of {bundle} have been used (a simulator ran in it?); "
            "make a fresh bundle with `ecoin-provision new --renew`"
        )
    return state


def install_bundle(
    bundle: str | Path,
    t: Target,
    *,
    board: str | None = None,
    firmware_only: bool = False,
    yes: bool = False,
    confirm: Confirm | None = None,
    progress: bool = False,
) -> dict[str, int]:
    """Puts the bundle onto target ``t``; returns the sizes verified on it.
    ``firmware_only``: everything but the coin store, onto the same device (an update of
    its firmware or settings that keeps its coins)."""
    bundle = Path(bundle)
    meta = bundles.complete_meta(bundle)
    device_id = meta["device_id"]
    if board and board != meta["board"]:
        raise ProvisionError(
            f"the bundle of {device_id} is for board {meta['board']!r}, not {board!r}; "
            f"make one with `ecoin-provision new {device_id} --board {board} --renew`"
        )
    old = read_store(t)
    names = bundles.flash_files(bundle)
    if firmware_only:
        if old.state is None or old.device_id != device_id:
            raise ProvisionError(f"{t.label} does not hold {device_id}'s coin store; flash the whole bundle")
        names = [n for n in names if n not in STORE]
        src = bundle
    else:
        state = _check_unused(bundle)
        _confirm_replace(meta, t, old, yes, confirm)
    bar = Progress(f"{device_id} -> {t.label}", len(names) + 1, progress)
    with tempfile.TemporaryDirectory(prefix="ecoin-bundle-") as tmp:
        if not firmware_only:
            src = _with_counter(bundle, Path(tmp), state, old, device_id)
        bar.show("copying")
        t.install(src, names, on_file=lambda name: bar.step(name))
        bar.show("verifying")
        sizes = verify(t, src, names)
    bar.finish(f"{len(names)} files verified")
    if not firmware_only:
        meta.setdefault("deployed", []).append({"target": t.label, "at": int(time.time())})
        bundles.save_meta(bundle, meta)
    return sizes


def _confirm_replace(meta: dict[str, Any], t: Target, old: Store, yes: bool, confirm: Confirm | None) -> None:
    others = [d["target"] for d in meta.get("deployed", []) if d["target"] != t.label]
    if others:
        require(
            f"The coins of {meta['device_id']} were already deployed to {', '.join(others)}. Two devices "
            "holding the same coins waste them (the second spend of each fails). Deploy again?",
            yes,
            confirm,
        )
    if old.state is not None:
        require(
            f"{t.label} already holds a coin store ({old.describe()}). Replacing it takes those coins "
            "off the device (claim its in-doubt coins first: ecoin-provision refund). Replace it?",
            yes,
            confirm,
        )


def _with_counter(bundle: Path, tmp: Path, state: flash.FlashState, old: Store, device_id: str) -> Path:
    """The bundle itself, or (when the old store was this device's and its top-up counter
    is ahead) a copy whose state.bin carries that counter."""
    if old.state is None or old.device_id != device_id or old.state.counter <= state.counter:
        return bundle
    for name in bundles.flash_files(bundle):
        (tmp / name).symlink_to((bundle / name).resolve())
    (tmp / "state.bin").unlink()
    write_file(tmp / "state.bin", flash.state_bytes(state.gen, 0, state.count, old.state.counter))
    return tmp


def verify(t: Target, src: Path, names: list[str]) -> dict[str, int]:
    """Every file has its size on the target; the coin store also its SHA-256."""
    listed = t.files()
    sizes: dict[str, int] = {}
    for name in names:
        if (src / name).is_dir():
            continue
        want = (src / name).stat().st_size
        if listed.get(name) != want:
            raise ProvisionError(f"{t.label}: {name} has {listed.get(name)} bytes, not {want}")
        sizes[name] = want
    store = [n for n in STORE if n in names]
    for name, digest in (t.sha256(store) if store else {}).items():
        if digest != hashlib.sha256((src / name).read_bytes()).hexdigest():
            raise ProvisionError(f"{t.label}: {name} differs from the bundle's")
    return sizes
