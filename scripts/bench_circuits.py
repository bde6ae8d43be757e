"""Speed of the fast simulator vs PennyLane in its fastest configurations, on this CPU.

Writes results/bench_circuits.json. Cases: HQConv and FQConv (3 layers, 12 qubits), batch 128
(one vertex call) and 6 272 (128 images × 49 patches, one QuanvU-Net call), forward and
forward + backward (gradients of Σ sin(outputs) w.r.t. inputs and θ); plus HQConv forward at
batch 343 000 (one QuanvU-Net call while sampling 7 000 images) on the fast simulator only.

The fast simulator is timed in this process. Every PennyLane mode (`PEERS`) × case runs in
its own child process (``--peer``) under a wall-clock and a memory limit, so a mode that runs out
of time or memory, or crashes, is recorded as such and never turned into a speed-up. Each child
also checks that it computed the same function as the fast simulator (``max_abs_diff``).

Usage: JAX_PLATFORMS=cpu python scripts/bench_circuits.py [--quick] [--ansatze A ...]
           [--batches B ...] [--modes M ...] [--peers P ...] [--peer-timeout S]
           [--peer-memory-gb G] [--out PATH]
Child: JAX_PLATFORMS=cpu python scripts/bench_circuits.py --peer P --ansatz A --batch B --mode M

``--device-form`` is the GPU's benchmark (issue 19; run first in a GPU slot by
``scripts/device_campaign.py slot``; no PennyLane there): the fast simulator alone, HQConv and
FQConv forward at 6 272 and 343 000 circuits and forward+backward at 6 272, each beside its floor
(`qhd_lib.floors`, the costs of the program traced without its chunking loop); a case that would
pass ``--deadline-s`` (judged by the last case's time) is skipped and listed, and the JSON is
written after every case. ``--tiny`` (CPU tests) uses small batches.

    JAX_PLATFORMS=cuda python scripts/bench_circuits.py --device-form --deadline-s 120 \\
        --out OUT/bench_circuits_gpu.json --commit SHA
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from qhd_lib import io, provenance
from qhd_lib.circuits import Ansatz, init_params, make_ansatz, simulate, simulator
from qhd_lib.deadline import Deadline
from qhd_lib.errors import ProvenanceError
from qhd_lib.floors import floor_seconds, machine_rates, xla_cost
from qhd_lib.provenance import ROOT

ANSATZE = ("hqconv", "fqconv")
BATCHES = (128, 6272)
SAMPLING_BATCH = 343_000
MODES = ("forward", "forward+backward")


class Peer(NamedTuple):
    """One PennyLane mode: its device, differentiation, batching and child environment."""

    device: str
    diff_method: str
    interface: str  # "jax": float32, run under jax.jit; "autograd": float64 NumPy, no compiling
    qnode_kwargs: dict[str, Any]
    broadcast: bool  # the whole batch in one QNode call; else jax.vmap over one-input calls
    env: dict[str, str]
    description: str


# lightning.qubit runs under autograd: through JAX it runs only inside jax.pure_callback, one
# input per callback under jax.vmap, 3x slower at batch 16 (forward 0.29 s vs 0.08 s, gradient
# 1.27 s vs 0.41 s on the loaded CPU); broadcasting under jax.jit is out of reach, as PennyLane
# splits the batch into one tape per input in traced JAX code (a jaxpr of 184 k lines for the
# gradient at batch 64). With OpenMP's default 2 threads on the shared 2-core CPU, Lightning
# executed up to 70x slower than with one.
PEERS: dict[str, Peer] = {
    "default.qubit-broadcast": Peer(
        "default.qubit",
        "backprop",
        "jax",
        {},
        True,
        {},
        "qml.device('default.qubit'), qml.qnode(interface='jax', diff_method='backprop'); the "
        "whole batch in one QNode call (parameter broadcasting: AngleEmbedding inputs (B, 12)); "
        "float32; jax.jit",
    ),
    "default.qubit-vmap": Peer(
        "default.qubit",
        "backprop",
        "jax",
        {},
        False,
        {},
        "qml.device('default.qubit'), qml.qnode(interface='jax', diff_method='backprop'); one "
        "input per QNode call, jax.vmap over the batch; float32; jax.jit (the released code)",
    ),
    "lightning.qubit-adjoint": Peer(
        "lightning.qubit",
        "adjoint",
        "autograd",
        {"device_vjp": True},
        True,
        {"OMP_NUM_THREADS": "1"},
        "qml.device('lightning.qubit') (complex128), qml.qnode(interface='autograd', "
        "diff_method='adjoint', device_vjp=True); the whole batch in one QNode call (parameter "
        "broadcasting, which PennyLane expands into one tape per input, executed as one batch); "
        "float64 NumPy inputs, gradient by qml.grad; OMP_NUM_THREADS=1",
    ),
}
CHECK_INPUTS = 8  # inputs on which a child compares outputs / input gradients
TOLERANCE = 1e-4  # agreement: max |peer − fast| ≤ TOLERANCE · max(1, max |fast|)
WARNING_FILTERS = (".*complex128.*complex64.*", ".*[Cc]asting.*complex.*")


def inputs(ansatz: Ansatz, batch: int) -> tuple[jax.Array, jax.Array]:
    """The benchmark's inputs and θ: the same in the parent and in every child."""
    theta = init_params(jax.random.key(0), ansatz)
    x = jax.random.uniform(jax.random.key(1), (batch, ansatz.n_qubits), minval=-3, maxval=3)
    return x, theta


def max_calls(batch: int, peer: bool) -> int:
    """Timed calls per case: fewer at large batch, where one call already takes seconds."""
    if batch > 1000:
        return 2 if peer else 3
    return 3 if peer else 10


def time_calls(
    fn: Callable, args: tuple, calls: int, jit: bool = True, budget_s: float = 30.0
) -> tuple[Any, dict[str, Any]]:
    """Call ``fn(*args)`` ``calls`` times or until the calls took ``budget_s`` seconds (at least
    once). Returns the last output and seconds per call (best of the calls). With ``jit``,
    ``jax.jit(fn)`` is compiled ahead of time and tracing + compilation is timed apart, so it never
    enters the steady-state time; without (NumPy peers), ``compile_seconds`` is None."""
    start = time.perf_counter()
    if jit:
        fn = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start if jit else None
    times: list[float] = []
    while len(times) < calls and sum(times) < budget_s:
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return out, {
        "seconds": min(times),
        "median_seconds": sorted(times)[len(times) // 2],
        "calls": len(times),
        "first_call_seconds": times[0],
        "compile_seconds": compile_s,
    }


def with_loss(forward: Callable) -> tuple[Callable, Callable]:
    """``(forward, gradient of Σ sin(forward) w.r.t. inputs and θ)``, neither jitted."""

    def loss(x, theta):
        return jnp.sum(jnp.sin(forward(x, theta)))

    return forward, jax.grad(loss, argnums=(0, 1))


def fast_fns(ansatz: Ansatz) -> tuple[Callable, Callable]:
    """The fast simulator's forward and forward + backward."""
    return with_loss(lambda x, theta: simulate(ansatz, x, theta))


def peer_fns(peer: str, ansatz: Ansatz) -> tuple[Callable, Callable]:
    """The PennyLane mode ``peer`` (see `PEERS`): forward and forward + backward, on the
    benchmark's JAX arrays (an autograd peer converts them to float64 NumPy inside, as part of
    its call)."""
    import pennylane as qml
    from pennylane import numpy as pnp

    from qhd_lib.circuits.reference import apply_ansatz

    spec = PEERS[peer]

    @qml.qnode(
        qml.device(spec.device, wires=ansatz.n_qubits),
        interface=spec.interface,
        diff_method=spec.diff_method,
        **spec.qnode_kwargs,
    )
    def circuit(x, theta):
        qml.AngleEmbedding(x, wires=range(ansatz.n_qubits), rotation="X")
        apply_ansatz(ansatz, theta)
        return [qml.expval(qml.PauliZ(q)) for q in range(ansatz.n_qubits)]

    if spec.interface == "autograd":

        def loss(x, theta):
            return pnp.sum(pnp.sin(pnp.stack(circuit(x, theta), axis=-1)))

        def forward(x, theta):
            return pnp.stack(circuit(*(np.asarray(a, np.float64) for a in (x, theta))), axis=-1)

        def backward(x, theta):
            x, theta = (
                pnp.array(np.asarray(a, np.float64), requires_grad=True) for a in (x, theta)
            )
            return tuple(qml.grad(loss, argnums=[0, 1])(x, theta))

        return forward, backward
    if spec.broadcast:
        return with_loss(lambda x, theta: jnp.stack(circuit(x, theta), axis=-1))
    return with_loss(lambda x, theta: jax.vmap(lambda xi: jnp.stack(circuit(xi, theta)))(x))


def agreement(
    ansatz: Ansatz, mode: str, x: jax.Array, theta: jax.Array, out: Any
) -> dict[str, Any]:
    """Max |peer − fast simulator|: outputs or input gradients on the first `CHECK_INPUTS`
    inputs, and the θ gradient (a sum over the whole batch); and whether all are within
    `TOLERANCE`, so the JSON shows that every mode computed the same function."""
    forward, backward = (jax.jit(f) for f in fast_fns(ansatz))
    n = CHECK_INPUTS
    if mode == "forward":
        pairs = {"outputs": (out[:n], forward(x[:n], theta))}
    else:
        grad_x, grad_theta = backward(x, theta)
        pairs = {"grad_inputs": (out[0][:n], grad_x[:n]), "grad_theta": (out[1], grad_theta)}
    diffs, agrees = {}, True
    for key, (peer, fast) in pairs.items():
        peer, fast = np.asarray(peer, np.float64), np.asarray(fast, np.float64)
        diffs[key] = float(np.max(np.abs(peer - fast)))
        agrees &= diffs[key] <= TOLERANCE * max(1.0, float(np.max(np.abs(fast))))
    return {"max_abs_diff": diffs, "agrees": agrees}


def run_child(args: argparse.Namespace) -> None:
    """Time one PennyLane mode on one case; print one JSON line (the parent reads the last)."""
    ansatz = make_ansatz(args.ansatz)
    x, theta = inputs(ansatz, args.batch)
    fn = peer_fns(args.peer, ansatz)[MODES.index(args.mode)]
    out, timing = time_calls(
        fn, (x, theta), max_calls(args.batch, peer=True), jit=PEERS[args.peer].interface == "jax"
    )
    check = agreement(ansatz, args.mode, x, theta, out)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux
    print(
        json.dumps(
            {
                "status": "ok" if check["agrees"] else "mismatch",
                **timing,
                **check,
                "peak_rss_gb": peak_gb,
            }
        ),
        flush=True,
    )


def rss_gb(pid: int) -> float:
    """Resident memory of process ``pid`` in GiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError):
        pass
    return 0.0


def available_gb() -> float:
    """MemAvailable from /proc/meminfo, in GiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def run_peer(
    peer: str, ansatz: str, batch: int, mode: str, timeout_s: float, memory_gb: float
) -> dict[str, Any]:
    """Run one child; its JSON result, or why it has none ("timeout", "out_of_memory",
    "crashed" with the exit code and the last 4 lines of stderr, as JAX ends its tracebacks with
    a note). The child is killed past ``timeout_s`` seconds or ``memory_gb`` GiB resident, before
    the kernel's OOM killer can pick a process of another user of this machine."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--peer",
        peer,
        "--ansatz",
        ansatz,
        "--batch",
        str(batch),
        "--mode",
        mode,
    ]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=err, cwd=ROOT, env={**os.environ, **PEERS[peer].env}
        )
        peak = 0.0
        while proc.poll() is None:
            peak = max(peak, rss_gb(proc.pid))
            if time.perf_counter() - start > timeout_s:
                killed = {"status": "timeout", "limit_s": timeout_s}
            elif peak > memory_gb:
                killed = {"status": "out_of_memory", "limit_gb": memory_gb, "rss_gb": peak}
            else:
                time.sleep(0.25)
                continue
            proc.kill()
            proc.wait()
            return killed
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        lines = out.read().decode(errors="replace").splitlines()
        err_lines = [s for s in err.read().decode(errors="replace").splitlines() if s.strip()]
    if proc.returncode != 0 or not lines:
        code = proc.returncode
        return {
            "status": "crashed",
            "returncode": code,
            "signal": signal.Signals(-code).name if code < 0 else None,
            "stderr_tail": err_lines[-4:],
            "wall_seconds": wall,
        }
    return {**json.loads(lines[-1]), "wall_seconds": wall}


DEVICE_CASES = ((6272, "forward"), (6272, "forward+backward"), (SAMPLING_BATCH, "forward"))
TINY_CASES = ((64, "forward"), (64, "forward+backward"), (512, "forward"))
MIN_CASE_S = 5.0  # what a case is taken to cost before one has been timed


@contextlib.contextmanager
def unchunked() -> Iterator[None]:
    """Trace `simulate` on the whole batch at once, for XLA's costs (a loop's body counts once)."""
    saved = simulator.chunk_limit
    simulator.chunk_limit = lambda ansatz: 2**62
    try:
        yield
    finally:
        simulator.chunk_limit = saved


def device_case(name: str, batch: int, mode: str, rates: dict) -> dict[str, Any]:
    """The fast simulator on one case, timed (`time_calls`) beside its floor."""
    ansatz = make_ansatz(name)
    fn = fast_fns(ansatz)[MODES.index(mode)]
    x, theta = inputs(ansatz, batch)
    _, timing = time_calls(fn, (x, theta), max_calls(batch, False))
    with unchunked():  # a new function, so that jit traces it again
        cost = xla_cost(jax.jit(lambda *a: fn(*a)).lower(x, theta).compile())
    floor = floor_seconds(cost, rates)
    ratio = timing["seconds"] / floor if floor else None
    return timing | {"floor_s": floor, "vs_floor": ratio, "xla": cost}


def device_form(args: argparse.Namespace, started_at: provenance.Commit) -> None:
    """The GPU benchmark (see the module doc), to ``args.deadline_s``; written after each case."""
    start = time.perf_counter()
    deadline = Deadline(args.deadline_s)
    report: dict[str, Any] = {
        "what": "12-qubit ansaetze, 3 layers, on JAX's default device: the fast simulator's "
        "seconds per call (best of the calls, compilation apart) beside its floor: max(XLA "
        "bytes / copy bandwidth, XLA FLOPs / matmul rate), rates measured here, costs of the "
        "program traced without its chunking loop; forward+backward = gradient of "
        "sum(sin(outputs)) w.r.t. inputs and theta; cases that would pass the deadline "
        "(judged by the last case's wall time) are listed as skipped",
        "matmul_precision": "highest",
        "tiny": args.tiny,
        "cases": [],
        "skipped": [],
    }

    def write() -> None:
        report["provenance"] = provenance.record(
            provenance.python_command(),
            wall_s=time.perf_counter() - start,
            packages=("jax", "jaxlib", "numpy"),
            allow_dirty=args.allow_dirty,
            found=started_at,
        )
        io.write_json(args.out, report, sort_keys=False)

    with jax.default_matmul_precision("highest"):
        report["machine"] = rates = machine_rates(*((1, 512, 16) if args.tiny else (3,)))
        write()
        last = MIN_CASE_S
        for name in args.ansatze:
            for batch, mode in TINY_CASES if args.tiny else DEVICE_CASES:
                what = {"ansatz": name, "batch": batch, "mode": mode}
                if not deadline.allows(last):
                    left = f"{deadline.left():.0f} s left, the last case took {last:.0f} s"
                    report["skipped"].append(what | {"reason": left})
                    continue
                t0 = time.monotonic()
                try:
                    report["cases"].append(what | device_case(name, batch, mode, rates))
                except (jax.errors.JaxRuntimeError, MemoryError) as err:  # e.g. out of memory
                    report["cases"].append(what | {"error": str(err).splitlines()[0][:300]})
                last = max(MIN_CASE_S, time.monotonic() - t0)
                print(json.dumps(report["cases"][-1]), flush=True)
                write()
    write()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 128 only, no 343 000")
    parser.add_argument("--ansatze", nargs="+", choices=ANSATZE, default=list(ANSATZE))
    parser.add_argument(
        "--batches",
        nargs="+",
        type=int,
        help=f"default {' '.join(map(str, BATCHES))}; given: no {SAMPLING_BATCH}",
    )
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--peers", nargs="+", choices=list(PEERS), default=list(PEERS))
    parser.add_argument(
        "--peer-timeout",
        type=float,
        default=600.0,
        help="wall-clock seconds per PennyLane child (compilation included)",
    )
    parser.add_argument(
        "--peer-memory-gb",
        type=float,
        help="resident GiB per child (default 80%% of MemAvailable at start)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_circuits.json")
    parser.add_argument("--device-form", action="store_true", help="the GPU form (module doc)")
    parser.add_argument("--deadline-s", type=float, help="--device-form: seconds it may take")
    parser.add_argument("--tiny", action="store_true", help="--device-form: small batches (tests)")
    parser.add_argument("--peer", choices=list(PEERS), help=argparse.SUPPRESS)
    parser.add_argument("--ansatz", choices=ANSATZE, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    provenance.add_arguments(parser)
    args = parser.parse_args()
    # PennyLane in single precision casts its complex128 matrices to complex64 and says so
    for message in WARNING_FILTERS:
        warnings.filterwarnings("ignore", message=message)
    if args.peer:
        run_child(args)
        return
    try:
        started_at = provenance.apply_arguments(args, args.out)
    except ProvenanceError as error:  # refused before any work
        parser.error(str(error))
    if args.device_form:
        device_form(args, started_at)
        return

    wall = time.perf_counter()
    load_before = os.getloadavg()
    memory_gb = args.peer_memory_gb or 0.8 * available_gb()
    batches = [128] if args.quick else args.batches or list(BATCHES)
    cases = []
    for name in args.ansatze:
        ansatz = make_ansatz(name)
        fast = fast_fns(ansatz)
        for batch in batches:
            x, theta = inputs(ansatz, batch)
            for mode in args.modes:
                _, f = time_calls(fast[MODES.index(mode)], (x, theta), max_calls(batch, False))
                peers = {
                    p: run_peer(p, name, batch, mode, args.peer_timeout, memory_gb)
                    for p in args.peers
                }
                done = {p: r["seconds"] for p, r in peers.items() if r["status"] == "ok"}
                fastest = min(done, key=done.get) if done else None
                case = {
                    "ansatz": name,
                    "batch": batch,
                    "mode": mode,
                    "fast": f,
                    "peers": peers,
                    "fastest_peer": fastest,
                    "speedup": done[fastest] / f["seconds"] if fastest else None,
                }
                brief = "  ".join(
                    f"{p} " + (f"{r['seconds']:.3f}s" if p in done else r["status"])
                    for p, r in peers.items()
                )
                print(
                    f"{name:7s} {batch:6d} {mode:17s} fast {f['seconds']:.4f}s  {brief}", flush=True
                )
                cases.append(case)
    if not (args.quick or args.batches) and "hqconv" in args.ansatze:
        ansatz = make_ansatz("hqconv")
        _, f = time_calls(fast_fns(ansatz)[0], inputs(ansatz, SAMPLING_BATCH), 1)
        print(f"hqconv  {SAMPLING_BATCH} forward           fast {f['seconds']:.2f}s", flush=True)
        cases.append(
            {
                "ansatz": "hqconv",
                "batch": SAMPLING_BATCH,
                "mode": "forward",
                "fast": f,
                "peers": {},
                "fastest_peer": None,
                "speedup": None,
                "note": "one QuanvU-Net circuit call while sampling 7 000 images",
            }
        )

    result = {
        "what": "12-qubit ansaetze, 3 layers: fast JAX simulator (single precision) vs "
        "PennyLane's fastest modes (peer_modes), each in its own process; seconds per "
        "call (best of the calls, compilation apart); forward+backward = gradient of "
        "sum(sin(outputs)) w.r.t. inputs and theta; speedup = time of the fastest peer "
        "that finished and agreed / fast time",
        "peer_modes": {p: PEERS[p].description for p in args.peers},
        "peer_limits": {
            "wall_seconds": args.peer_timeout,
            "resident_gb": memory_gb,
            "agreement": f"max |peer - fast| <= {TOLERANCE} * max(1, max |fast|) "
            f"(outputs, input gradients: first {CHECK_INPUTS} inputs)",
        },
        "cases": cases,
        "provenance": {
            **provenance.record(
                provenance.python_command(),
                wall_s=time.perf_counter() - wall,
                packages=("jax", "jaxlib", "pennylane", "pennylane_lightning", "numpy"),
                allow_dirty=args.allow_dirty,
                found=started_at,
            ),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "load_note": "the 2-core machine is shared with other jobs: absolute times are "
            "noisy, the speed-up (same run, same load) is the robust figure",
        },
    }
    io.write_json(args.out, result, sort_keys=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
