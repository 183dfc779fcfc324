"""The weight-push process group: two spawned processes form a gloo group on 127.0.0.1 and
rank 0 broadcasts a dict of mixed-dtype tensors that rank 1 must receive bit for bit."""

from __future__ import annotations

import multiprocessing
import socket
import traceback
from pathlib import Path

import pytest
import torch

from core.weights import join_group, receive_tensors, send_tensors, spec_of

BITS = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.int64: torch.int64}


def make_state(seed: int) -> dict[str, torch.Tensor]:
    """Mixed dtypes, interleaved, with 0-d, empty, non-contiguous and special-value tensors."""
    g = torch.Generator().manual_seed(seed)
    return {
        "embed": torch.randn(7, 5, generator=g),
        "norm": torch.randn(5, generator=g).bfloat16(),
        "step": torch.tensor(12_345_678_901 + seed, dtype=torch.int64),
        "proj_t": torch.randn(4, 6, generator=g).t(),  # non-contiguous view
        "ids": torch.randint(-(2**40), 2**40, (3, 4), generator=g, dtype=torch.int64),
        "special": torch.tensor([float("nan"), -0.0, float("inf"), -float("inf"), 1e-45], dtype=torch.float32),
        "bias": torch.randn(2, 3, generator=g).bfloat16(),
        "empty": torch.zeros(0, 3),
        "bf_special": torch.tensor([float("nan"), -0.0, float("inf"), 3.0e38]).bfloat16(),
    }


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    bits = BITS[a.dtype]
    return torch.equal(a.contiguous().view(bits), b.contiguous().view(bits))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, out_dir: str, spec) -> None:
    """Entry point of each spawned process (module level, so spawn can import it)."""
    out = Path(out_dir)
    try:
        from core.env import apply_runtime_env

        apply_runtime_env(cuda=False)
        group = join_group("127.0.0.1", port, rank, 2, "gloo")
        if rank == 0:
            sent = [send_tensors(group, make_state(0)), send_tensors(group, make_state(1))]
            torch.save({"sent": sent}, out / "rank0.pt")
        else:
            first = receive_tensors(group, spec)
            second = receive_tensors(group, spec)  # the group is reused for the next push
            torch.save({"first": first, "second": second, "order": list(first)}, out / "rank1.pt")
    except BaseException:
        (out / f"rank{rank}.err").write_text(traceback.format_exc())
        raise


# -- spec_of (no processes) ---------------------------------------------------------------------


def test_spec_of_names_dtypes_shapes_in_order():
    spec = spec_of(make_state(0))
    assert spec == [
        ("embed", "float32", [7, 5]),
        ("norm", "bfloat16", [5]),
        ("step", "int64", []),
        ("proj_t", "float32", [6, 4]),
        ("ids", "int64", [3, 4]),
        ("special", "float32", [5]),
        ("bias", "bfloat16", [2, 3]),
        ("empty", "float32", [0, 3]),
        ("bf_special", "bfloat16", [4]),
    ]


def test_join_group_rejects_unknown_backend_without_waiting():
    with pytest.raises(ValueError, match="unknown weight-group backend 'mpi'"):
        join_group("127.0.0.1", free_port(), 1, 2, "mpi")  # a non-root: would block on the store


# -- two processes -------------------------------------------------------------------------------


def test_broadcast_between_two_spawned_processes_is_bitwise(tmp_path):
    state = make_state(0)
    spec = spec_of(state)
    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_rank_main, args=(r, port, str(tmp_path), spec)) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=90)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    errors = {f.name: f.read_text() for f in tmp_path.glob("*.err")}
    assert not errors, errors
    assert [p.exitcode for p in procs] == [0, 0]

    # Bytes on the wire, by dtype: float32 35+24+5+0 = 64 elems → 256 B;
    # bfloat16 5+6+4 = 15 → 30 B; int64 1+12 = 13 → 104 B. Total 390 B per push.
    sent = torch.load(tmp_path / "rank0.pt")["sent"]
    assert sent == [390, 390]

    got = torch.load(tmp_path / "rank1.pt")
    assert got["order"] == [name for name, _, _ in spec]
    for key, seed in (("first", 0), ("second", 1)):
        expected = make_state(seed)
        received = got[key]
        assert received.keys() == expected.keys()
        for name, tensor in expected.items():
            assert received[name].dtype == tensor.dtype, name
            assert received[name].shape == tensor.shape, name
            assert bitwise_equal(received[name], tensor), (key, name)
    assert got["first"]["step"].item() == 12_345_678_901
    assert got["second"]["step"].item() == 12_345_678_902
    assert torch.isnan(got["first"]["special"][0]) and torch.signbit(got["first"]["special"][1])
    assert not bitwise_equal(got["first"]["embed"], got["second"]["embed"])
