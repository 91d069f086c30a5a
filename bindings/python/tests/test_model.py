"""rwkv_wgpu.Model against the official package's outputs (tests/fixtures, made by
tools/make_fixtures.py and tools/make_demo_fixtures.py with BlinkDL's `rwkv` 0.8.32)."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest

import rwkv_wgpu
from rwkv_wgpu import RWKV, Model, RwkvError, State

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "tests" / "fixtures" / "v7" / "tiny"
DEMO = ROOT / "assets" / "demo"
# The conformance bound of tests/conformance.rs: max |ours - official| <= 1e-3 x std, per position.
BOUND = 1e-3


def relative_error(ours, official):
    return float(np.abs(ours - official).max() / official.std())


@pytest.fixture(scope="module")
def tiny():
    # As with the official class, the path may leave out ".pth".
    return RWKV(model=str(TINY / "model"), strategy="cpu fp32")


@pytest.fixture(scope="module")
def golden():
    return np.load(TINY / "tokens.npy").tolist(), np.load(TINY / "logits.npy")


def test_one_token_at_a_time_matches_the_official_logits(tiny, golden):
    tokens, logits = golden
    state = None
    for position, token in enumerate(tokens):
        out, state = tiny.forward([token], state)
        assert out.dtype == np.float32 and out.shape == (tiny.vocab_size,)
        assert relative_error(out, logits[position]) <= BOUND, position


def test_a_sequence_matches_the_official_logits(tiny, golden):
    tokens, logits = golden
    last, _ = tiny.forward(tokens, None)
    assert relative_error(last, logits[-1]) <= BOUND
    every, _ = tiny.forward(tokens, None, full_output=True)
    assert every.shape == (len(tokens), tiny.vocab_size)
    for position in range(len(tokens)):
        assert relative_error(every[position], logits[position]) <= BOUND, position
    # Split in two, through the state.
    _, state = tiny.forward(tokens[:20], None)
    rest, _ = tiny.forward(tokens[20:], state)
    assert relative_error(rest, logits[-1]) <= BOUND


def test_states_round_trip_and_branch(tiny, golden, tmp_path):
    tokens, logits = golden
    _, state = tiny.forward(tokens[:30], None)
    kept = copy.deepcopy(state)
    expected, _ = tiny.forward(tokens[30:], state)
    tiny.forward([1, 2, 3], None)  # the session moves on
    for restored in (kept, State.from_bytes(state.to_bytes())):
        again, _ = tiny.forward(tokens[30:], restored)
        np.testing.assert_array_equal(again, expected)
    state.save(str(tmp_path / "state.bin"))
    again, _ = tiny.forward(tokens[30:], State.load(str(tmp_path / "state.bin")))
    np.testing.assert_array_equal(again, expected)
    assert relative_error(expected, logits[-1]) <= BOUND


def test_errors_are_exceptions_with_the_librarys_messages(tiny):
    with pytest.raises(RwkvError, match="no-such-model"):
        Model("/nowhere/no-such-model.pth")
    with pytest.raises(RwkvError, match="out of range"):
        tiny.forward([tiny.vocab_size + 5], None)
    with pytest.raises(RwkvError, match="at least one token"):
        tiny.forward([], None)
    with pytest.raises(RwkvError, match="int3"):
        Model(str(TINY / "model.pth"), quant="int3")
    with pytest.raises(RwkvError, match="strategy"):
        Model(str(TINY / "model.pth"), strategy="cuda")
    with pytest.raises(RwkvError):
        State.from_bytes(b"not a state")
    assert issubclass(RwkvError, Exception)


def test_generate_writes_the_official_greedy_continuation():
    demo = Model(str(DEMO / "model.safetensors"), tokenizer=str(DEMO / "tokenizer.json"))
    greedy = json.loads((ROOT / "tests" / "fixtures" / "demo" / "greedy.json").read_text())
    pieces = []
    text = demo.generate(greedy["prompt"], len(greedy["continuation"]), greedy=True, callback=pieces.append)
    assert text == greedy["continuation"]
    assert "".join(pieces) == text
    assert demo.decode(demo.encode("ROMEO:")) == "ROMEO:"
    # Sampling is reproducible with a seed; a callback's exception stops the generation.
    a = demo.generate("ROMEO:", 32, temperature=0.8, seed=7)
    assert a == demo.generate("ROMEO:", 32, temperature=0.8, seed=7)

    def fail(_piece):
        raise KeyError("stop here")

    with pytest.raises(KeyError, match="stop here"):
        demo.generate("ROMEO:", 32, callback=fail)
    # A callback that calls the model gets an error, not a wait for its own generation.

    def reenter(_piece):
        demo.forward([1], None)

    with pytest.raises(RwkvError, match="callback cannot call"):
        demo.generate("ROMEO:", 4, callback=reenter)
    assert demo.generate("ROMEO:", 4, greedy=True) == demo.generate("ROMEO:", 4, greedy=True)
    assert demo.version.startswith("RWKV-7") and demo.n_layer == 4 and demo.n_embd == 256


def test_the_module_exports_the_official_name():
    assert rwkv_wgpu.RWKV is rwkv_wgpu.Model
