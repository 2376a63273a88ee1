"""Learning an asset's baseline in a child process (the ONNX Runtime backend).

The child (:mod:`models.commission_child`) imports torch, trains, and writes the
baseline with its ONNX graph into a private folder under ``<baselines>/.incoming``.
Only when it exits 0 is that folder moved into place and loaded, so a child that
crashes, is killed or runs out of time leaves the asset exactly as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import shutil
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from agent.domain import CommissionRequest
from agent.errors import ModelError
from agent.inference.baselines import BaselineStore
from agent.logs import fields
from models.lean import LeanBaseline

log = logging.getLogger(__name__)

INCOMING = ".incoming"
#: Beyond the CPU budget of training: interpreter, torch import, ONNX export.
STARTUP_ALLOWANCE_S = 60.0


_PR_SET_PDEATHSIG = 1


def _find_prctl() -> Any:
    # Looked up in the parent: loading a library between fork and exec can deadlock.
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_prctl = _find_prctl() if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child between fork and exec: SIGKILL once the agent (the thread that
    started the child: the event loop's) is gone, even if it was killed by SIGKILL.

    Linux only (prctl); elsewhere the child is still killed on every exit path the
    agent controls (timeout, cancellation).
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class ChildCommissioner:
    """``await fit(request)`` -> the asset's new :class:`LeanBaseline`, or ModelError."""

    def __init__(
        self,
        bundle: Path,
        store: BaselineStore,
        *,
        cpu_budget_s: float,
        threads: int = 1,
        python: str = sys.executable,
    ) -> None:
        self.bundle = bundle
        self.store = store
        self.cpu_budget_s = cpu_budget_s
        self.threads = threads
        self.python = python
        self.incoming = store.root / INCOMING

    def sweep(self) -> None:
        """Remove what children killed by a power cut left behind."""
        shutil.rmtree(self.incoming, ignore_errors=True)

    def torch_only(self) -> list[Path]:
        """Baselines saved by a torch-backend agent (no ONNX graph yet)."""
        found = []
        for folder in sorted(self.store.root.glob("*/baseline.json")):
            try:
                meta = json.loads(folder.read_text())
            except (OSError, ValueError):
                continue  # load_all reports it and the asset is commissioned again
            if isinstance(meta, dict) and not meta.get("onnx"):
                found.append(folder.parent)
        return found

    async def convert(self, folders: list[Path]) -> int:
        """Add ONNX graphs to torch-only baselines in one child; returns how many were
        converted. A folder is replaced only by a complete converted copy."""
        if not folders:
            return 0
        work = self.incoming / f"convert-{uuid.uuid4().hex}"
        work.mkdir(parents=True)
        try:
            args = ["-m", "models.commission_child", "convert", "--out", str(work)]
            # Some may fail (logged): those that were written are moved in all the same.
            with contextlib.suppress(ModelError, TimeoutError):
                await self._child([*args, *map(str, folders)], "baseline conversion", None)
            done = 0
            for folder in folders:
                converted = work / folder.name
                if not (converted / "baseline.json").is_file():
                    continue
                shutil.rmtree(folder)
                converted.replace(folder)
                done += 1
            return done
        finally:
            shutil.rmtree(work, ignore_errors=True)

    async def fit(self, request: CommissionRequest) -> LeanBaseline:
        work = self.incoming / f"{uuid.uuid4().hex}"
        work.mkdir(parents=True)
        try:
            samples = work / "samples.npy"
            np.save(samples, np.asarray(request.samples, dtype=np.float32), allow_pickle=False)
            out = work / "baseline"
            await self._run(request, samples, out)
            target = self.store.path(request.asset)
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            out.replace(target)
            return await asyncio.to_thread(LeanBaseline.load, target, threads=self.threads)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    async def _run(self, request: CommissionRequest, samples: Path, out: Path) -> None:
        await self._child(
            [
                "-m",
                "models.commission_child",
                "--bundle",
                str(self.bundle),
                "--samples",
                str(samples),
                "--sensors",
                json.dumps(list(request.sensors)),
                "--asset",
                request.asset,
                "--out",
                str(out),
                "--cpu-budget",
                str(self.cpu_budget_s),
                "--threads",
                str(self.threads),
                *([] if request.plan.from_bundle else ["--scratch"]),
                *(
                    ["--run-sensor", run, "--run-min-fraction", str(request.plan.run_min_fraction)]
                    if (run := request.plan.run_sensor) is not None
                    else []
                ),
            ],
            "commissioning",
            request.asset,
        )

    async def _child(self, args: list[str], what: str, asset: str | None) -> None:
        """Run one child to completion; ModelError (logged) unless it exits 0."""
        child = await asyncio.create_subprocess_exec(
            self.python,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            # A child (torch, ~225 MB) must not outlive the agent, however the agent
            # ends: the kernel kills it when its parent dies, even by SIGKILL.
            preexec_fn=_die_with_parent,
        )
        try:
            async with asyncio.timeout(self.cpu_budget_s * 2 + STARTUP_ALLOWANCE_S):
                _, stderr = await child.communicate()
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
            raise
        if child.returncode != 0:
            lines = (stderr or b"").decode(errors="replace").strip().splitlines()
            why = lines[-1] if lines else f"killed by signal {-(child.returncode or 0)}"
            log.warning(
                f"{what} process failed",
                extra=fields(asset=asset, exit_code=child.returncode, error=why),
            )
            raise ModelError(f"{what} process exited with {child.returncode}: {why}")
