"""Learning an asset's baseline in a child process (the ONNX Runtime backend).

The child (:mod:`models.commission_child`) imports torch, trains, and writes the
baseline with its ONNX graph into a private folder under ``<baselines>/.incoming``.
Only when it exits 0 is that folder moved into place and loaded, so a child that
crashes, is killed or runs out of time leaves the asset exactly as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sys
import uuid
from pathlib import Path

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
        args = [
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
        ]
        child = await asyncio.create_subprocess_exec(
            self.python,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
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
                "commissioning process failed",
                extra=fields(asset=request.asset, exit_code=child.returncode, error=why),
            )
            raise ModelError(f"commissioning process exited with {child.returncode}: {why}")
