"""Running BlinkDL's `rwkv` package (PyPI 0.8.32, strategy 'cpu fp32') in a subprocess.

`rwkv.model` chooses its model class when it is imported: with `RWKV_V7_ON=1` the name `RWKV`
is the RWKV-7 class `RWKV_x070`, otherwise it is the RWKV-4/5/6 class. One Python process can
therefore only run one family, so every official run happens in a fresh interpreter
(`python3 -m rwkv_fixtures.official SPEC.json`) with the environment set before the import;
one subprocess runs all the jobs of one family, which pays the import once.

Each job runs one `.pth` ONE TOKEN AT A TIME from the zero state (`model.forward([tok], state)`,
the single-token path: `forward_one` for RWKV-7, `att_one*`/`ffn_one*` for RWKV-4..6) and
returns the logits after every token and the final state:

* RWKV-5/6/7: state[3i+0] (att x), state[3i+1] (wkv, [H, N, N]), state[3i+2] (ffn x);
* RWKV-4: state[5i+0] (att x), state[5i+1..3] (aa, bb, pp) stacked to [3, C], state[5i+4] (ffn x).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import subprocess
import sys
import tempfile
import warnings
from typing import List, Sequence, Tuple

import numpy as np
import torch

from .common import RWKV_PACKAGE_VERSION, RunResult, configure_torch

FAMILIES = ("v7", "legacy")
TOOLS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class OfficialRun:
    """The outcome of one job: results plus what the package detected."""

    result: RunResult       # float32
    version: str            # the package's model.version ('4', '5.0', '5.1', '5.2', '6.0') or 'x070'
    n_head: int             # the package's head count (0 for RWKV-4)


def family_env(family: str) -> dict:
    """Environment for a worker of `family` ('v7' or 'legacy')."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}")
    env = dict(os.environ)
    env["RWKV_V7_ON"] = "1" if family == "v7" else "0"
    env.setdefault("RWKV_JIT_ON", "1")   # the package's default; only RWKV-4..6 use it
    env["RWKV_CUDA_ON"] = "0"
    env["PYTHONPATH"] = TOOLS_DIR + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_official_many(family: str, jobs: Sequence[Tuple[str, Sequence[int]]],
                      threads: int = 1, strategy: str = "cpu fp32",
                      sequence: bool = False) -> List[OfficialRun]:
    """Run every (pth_path, tokens) job of one family in one subprocess; returns their runs.

    `strategy` other than 'cpu fp32' is only for measuring the package's other precisions (e.g.
    'cpu fp16': the torch operations of its `cuda fp16` path without the CUDA kernels); with
    `sequence` the tokens go in as one prompt (`forward_seq`, full output) instead of one by one."""
    if not jobs:
        return []
    with tempfile.TemporaryDirectory(prefix="rwkv-official-") as tmp:
        spec = {"family": family, "threads": threads, "strategy": strategy, "sequence": sequence,
                "jobs": []}
        for i, (pth, tokens) in enumerate(jobs):
            if not pth.endswith(".pth"):
                raise ValueError("the official loader reads MODEL_NAME + '.pth'")
            spec["jobs"].append({"pth": os.path.abspath(pth), "tokens": [int(t) for t in tokens],
                                 "out": os.path.join(tmp, f"{i}.npz")})
        spec_path = os.path.join(tmp, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        proc = subprocess.run([sys.executable, "-m", "rwkv_fixtures.official", spec_path],
                              env=family_env(family), capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
            raise RuntimeError(f"official {family} worker failed with exit code {proc.returncode}")
        runs = []
        for job in spec["jobs"]:
            z = np.load(job["out"])
            result = RunResult(logits=z["logits"], att_x=z["att_x"], wkv=z["wkv"], ffn_x=z["ffn_x"])
            runs.append(OfficialRun(result=result, version=str(z["version"]), n_head=int(z["n_head"])))
        return runs


def run_official(family: str, pth: str, tokens: Sequence[int], threads: int = 1,
                 strategy: str = "cpu fp32", sequence: bool = False) -> OfficialRun:
    """One job (see run_official_many)."""
    return run_official_many(family, [(pth, tokens)], threads, strategy, sequence)[0]


# --------------------------------------------------------------------------------------
# The worker (runs in the subprocess)
# --------------------------------------------------------------------------------------

def _import_package(family: str):
    """Import rwkv.model (environment already set by the parent) and check the class it chose."""
    import importlib.metadata
    version = importlib.metadata.version("rwkv")
    if version != RWKV_PACKAGE_VERSION:
        print(f"WARNING: rwkv package is {version}, fixtures are defined for {RWKV_PACKAGE_VERSION}",
              file=sys.stderr)
    if os.environ.get("RWKV_V7_ON") != ("1" if family == "v7" else "0"):
        raise RuntimeError("RWKV_V7_ON does not match the family")
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script deprecation notices
        import rwkv.model as rwkv_model
    is_v7 = getattr(rwkv_model, "RWKV_x070", None) is rwkv_model.RWKV
    if is_v7 != (family == "v7"):
        raise RuntimeError(f"rwkv.model selected {rwkv_model.RWKV.__name__} for family {family}")
    return rwkv_model


def _run_job(rwkv_model, family: str, pth: str, tokens: Sequence[int], strategy: str = "cpu fp32",
             sequence: bool = False) -> dict:
    """Run one model from the zero state, one token at a time unless `sequence`; returns the
    arrays to save."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script_method deprecation notices
        model = rwkv_model.RWKV(model=pth[:-4], strategy=strategy)
    state = None
    rows = []
    if sequence:
        out, state = model.forward([int(t) for t in tokens], None, full_output=True)
        rows = list(out.detach().to(torch.float32).numpy().copy())
    for tok in [] if sequence else tokens:
        out, state = model.forward([int(tok)], state)
        rows.append(out.detach().to(torch.float32).numpy().copy())
    L = model.n_layer if family == "v7" else model.args.n_layer
    arr = lambda t: t.detach().to(torch.float32).numpy()  # noqa: E731
    if family == "legacy" and model.version == 4:
        att_x = np.stack([arr(state[5 * i]) for i in range(L)])
        wkv = np.stack([np.stack([arr(state[5 * i + j]) for j in (1, 2, 3)]) for i in range(L)])
        ffn_x = np.stack([arr(state[5 * i + 4]) for i in range(L)])
    else:
        att_x, wkv, ffn_x = (np.stack([arr(state[3 * i + j]) for i in range(L)]) for j in range(3))
    if family == "v7":
        version, n_head = "x070", int(model.n_head)
    else:
        version = "4" if model.version == 4 else f"{float(model.version):.1f}"
        n_head = int(getattr(model.args, "n_head", 0))
    return {"logits": np.stack(rows), "att_x": att_x, "wkv": wkv, "ffn_x": ffn_x,
            "version": np.array(version), "n_head": np.array(n_head)}


def worker_main(spec_path: str) -> int:
    """Run the jobs of SPEC.json, writing one .npz per job."""
    with open(spec_path) as f:
        spec = json.load(f)
    configure_torch(spec["threads"])
    rwkv_model = _import_package(spec["family"])
    for job in spec["jobs"]:
        np.savez(job["out"], **_run_job(rwkv_model, spec["family"], job["pth"], job["tokens"],
                                        spec.get("strategy", "cpu fp32"), spec.get("sequence", False)))
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1]))
