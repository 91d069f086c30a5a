#!/usr/bin/env python3
"""Writes the tiny `.pth` checkpoints that tests/pth_reader.rs reads.

The outputs are committed, so the Rust tests never need Python or torch. Rerun this only to
change the fixtures (needs torch): `python3 tools/make_pth_fixtures.py`. Tensor values are
small `arange` ramps whose exact values the Rust test hard-codes, so keep the two in step.
"""

import collections
import io
import zipfile
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "pth"


def save(name, obj, **kwargs):
    """torch.save to a path, which names the archive's top folder after the file's stem."""
    torch.save(obj, OUT / name, **kwargs)


def dtypes():
    # Saved through a buffer, so the top folder is torch's default `archive/`.
    state = {
        "bf16": ((torch.arange(6) - 2) * 0.5).reshape(2, 3).to(torch.bfloat16),
        "f16": (torch.arange(8) * 0.25).reshape(2, 2, 2).to(torch.float16),
        "f32": torch.arange(5, dtype=torch.float32) / 4 - 1,
        "scalar": torch.tensor(3.5),
        "i64": torch.arange(3, dtype=torch.int64),
        "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.tensor([1.0, 2.0])),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    (OUT / "dtypes.pth").write_bytes(buffer.getvalue())


def views():
    # Views of one tensor share its storage, so torch saves that storage once and each view
    # as an offset and strides into it.
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    save(
        "views.pth",
        {
            "base": base,
            "transposed": base.t(),
            "row2": base[2],
            "cols": base[:, 1:3],
            "t_bf16": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3).t(),
            "broadcast": torch.tensor([7.0]).expand(3),
        },
    )


def ordered():
    # What `module.state_dict()` returns: an OrderedDict whose `_metadata` attribute is pickled
    # through BUILD. Names are deliberately not in sorted order.
    state = collections.OrderedDict()
    state["z.weight"] = torch.arange(4, dtype=torch.float16).reshape(2, 2)
    state["a.bias"] = torch.arange(2, dtype=torch.float32)
    state["m.scale"] = torch.tensor(-2.0, dtype=torch.bfloat16)
    state._metadata = collections.OrderedDict({"": {"version": 1}})
    save("ordered.pth", state)


def nested_protocol4():
    # A training checkpoint with the weights under `state_dict`, in protocol 4 (FRAME,
    # MEMOIZE, STACK_GLOBAL, SHORT_BINUNICODE).
    save(
        "proto4.pth",
        {"epoch": 3, "state_dict": {"w": torch.arange(4, dtype=torch.bfloat16).reshape(2, 2)}},
        pickle_protocol=4,
    )


def write_zip(name, entries, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(OUT / name, "w", compression=compression) as archive:
        for entry, data in entries.items():
            archive.writestr(entry, data)


def entries_of(name, top):
    """A fixture's entries, renamed under a new top folder."""
    with zipfile.ZipFile(OUT / name) as archive:
        old_top = archive.namelist()[0].split("/")[0]
        return {top + entry[len(old_top) :]: archive.read(entry) for entry in archive.namelist()}


def replace_once(data, old, new):
    assert data.count(old) == 1, (old, data.count(old))
    return data.replace(old, new)


def deflated():
    # The dtypes fixture compressed, which torch never does, to exercise the owned-bytes fallback.
    write_zip("deflated.pth", entries_of("dtypes.pth", "deflated"), zipfile.ZIP_DEFLATED)


def malformed():
    # A classic pickle exploit: calls os.system("true") when loaded by Python's pickle.
    evil = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."
    write_zip("os_system.pth", {"os_system/data.pkl": evil, "os_system/byteorder": b"little"})
    bad_opcode = b"\x80\x02}q\x00\xff."
    write_zip("bad_opcode.pth", {"bad_opcode/data.pkl": bad_opcode, "bad_opcode/byteorder": b"little"})

    small = {"x": torch.arange(4, dtype=torch.float32), "y": torch.arange(2, dtype=torch.float32)}
    save("small.pth", small)
    entries = entries_of("small.pth", "small")
    (OUT / "small.pth").unlink()

    big = dict(entries)
    big["small/byteorder"] = b"big"
    write_zip("big_endian.pth", big)

    # `x` claims 8 elements of a 4-element storage.
    overrun = dict(entries)
    overrun["small/data.pkl"] = replace_once(entries["small/data.pkl"], b"K\x04\x85", b"K\x08\x85")
    write_zip("overrun.pth", overrun)

    # A storage entry one byte short of a whole number of f32 elements.
    ragged = dict(entries)
    ragged["small/data/0"] = entries["small/data/0"][:-1]
    write_zip("ragged.pth", ragged)

    # Python dicts cannot hold a name twice, but a pickle can say so.
    duplicate = dict(entries)
    pickle = entries["small/data.pkl"]
    duplicate["small/data.pkl"] = replace_once(pickle, b"X\x01\x00\x00\x00y", b"X\x01\x00\x00\x00x")
    write_zip("duplicate.pth", duplicate)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.pth"):
        old.unlink()
    dtypes()
    views()
    ordered()
    nested_protocol4()
    deflated()
    malformed()
    total = sum(path.stat().st_size for path in OUT.glob("*.pth"))
    print(f"wrote {len(list(OUT.glob('*.pth')))} fixtures, {total} bytes, to {OUT}")


if __name__ == "__main__":
    main()
