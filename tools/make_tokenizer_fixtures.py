#!/usr/bin/env python3
"""Writes the tokenizer test fixtures under tests/fixtures/tokenizer/.

world_cases.json: strings and byte strings with the ids the official RWKV World tokenizer
(`rwkv.rwkv_tokenizer.TRIE_TOKENIZER` from the `rwkv` package, 0.8.32) gives them, so the Rust
tests can check id-for-id agreement without Python.

hf_byte_level.json: a small GPT-2 style byte-level BPE `tokenizer.json`, for testing the Hugging Face
path on characters that span several tokens. It is checked with the `tokenizers` Python package
when that is installed.

Usage: python3 tools/make_tokenizer_fixtures.py   (from the repository root; deterministic)
"""

import json
import os
import random

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = os.path.join(ROOT, "assets", "world", "rwkv_vocab_v20230424.txt")
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "tokenizer")


def text_cases(rng):
    cases = [
        "",
        "Hello world",
        "\n\n",
        "The Eiffel tower is in the city of",
        "User: What is the capital of France?\n\nAssistant: The capital of France is Paris.",
        "The quick brown fox jumps over the lazy dog. 0123456789 !@#$%^&*()_+-=[]{};':\",./<>?\\|`~",
        "Don't stop-believin' — it's 3.14159 o'clock; e.g. 1,000,000 (approx.)",
        "中华人民共和国成立于1949年。北京是中国的首都，上海是最大的城市。",
        "日本語のテキストです。ひらがな、カタカナ、漢字を含みます。",
        "한국어 문장입니다. 안녕하세요!",
        "Привет, мир! Съешь же ещё этих мягких французских булок.",
        "Ελληνικά: Καλημέρα κόσμε",
        "العربية: مرحبا بالعالم",
        "עברית: שלום עולם",
        "हिन्दी: नमस्ते दुनिया",
        "ภาษาไทย: สวัสดีชาวโลก",
        "Emoji: 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷🇯🇵 ❤️ 🏳️‍🌈 🤖",
        "Mixed: English 中文 日本語 한국어 Русский العربية 😀 ok",
        "Zero width:\u200b\u200c\u200d\u200e\ufeff and\u3000ideographic\u3000space \u2002\u2003\u2009",
        "Controls: \x00\x01\x02\x07\x08\x0b\x0c\x1b\x7f\x80\x9f end",
        "Latin-1: àáâãäåæçèéêëìíîïðñòóôõöøùúûüýþÿ ÀÁÂ ß ¡¿ «» ©®™ °±² µ",
        "Combining: e\u0301 a\u0308 n\u0303 \u1e9b\u0323 Z\u0351\u036b\u0343\u036a\u0302",
        "Math: ∀x∈ℝ, ∃y: x² + y² ≤ 1 ⇒ ∫₀¹ f(x) dx ≈ π/4; 𝔸𝔹ℂ 𝒜",
        "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
        'fn main() {\n\tlet v: Vec<u32> = (0..10).map(|x| x * x).collect();\n\tprintln!("{v:?}");\n}\n',
        '{"key": [1, 2.5, -3e10, true, null], "nested": {"a": "b\\n"}}',
        "<html>\n  <body class=\"x\">&amp; &lt;tag&gt; &#x1F600;</body>\n</html>\r\n",
        "#include <stdio.h>\r\nint main(void) { printf(\"%d\\n\", 42); return 0; }\r\n",
        "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC LIMIT 10;",
        "https://example.com/path?query=value&other=1#fragment mailto:someone@example.org",
        "Numbers: 0 1 12 123 1234 12345 123456 1234567 3.14 -2.718 1e-9 0xDEADBEEF 0b1010",
        "#" * 200,
        "-" * 100,
        "=" * 81,
        "\\" * 17,
        "'\"`" * 10,
    ]
    for n in [1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 127, 128, 129, 200, 300]:
        cases.append(" " * n)
    for chunk in [" \t", "\t", "\n", "\r\n", " \n", "\n ", "\t\n", "\r"]:
        for n in [1, 2, 3, 5, 9, 33]:
            cases.append(chunk * n)
    cases.append("a" + " " * 130 + "b\n\n\n\t\t x \r\n\r\n  y")
    cases.append("".join(chr(c) for c in range(32, 127)))
    cases.append("".join(chr(c) for c in range(0, 256)))

    # Random code points from everywhere except surrogates (not representable as UTF-8).
    ranges = [(0x20, 0x7F), (0x80, 0x800), (0x800, 0xD800), (0xE000, 0x10000), (0x10000, 0x110000)]
    weights = [8, 3, 4, 1, 2]
    for length in [5, 20, 60, 150, 400, 800]:
        chars = []
        for _ in range(length):
            low, high = rng.choices(ranges, weights)[0]
            chars.append(chr(rng.randrange(low, high)))
        cases.append("".join(chars))
    # Text a CJK/emoji heavy model would see: common characters mixed with ASCII.
    common = "的一是了我不人在他有这个上们来到时大地为子中你说生国年着就那和要她出也得里后自以会"
    emoji = "😀😂🥰😎🤔👍🙏🔥✨🎉❤️💯🚀🌍"
    for length in [50, 300]:
        cases.append("".join(rng.choice([rng.choice(common), rng.choice(emoji), " ", "a", "1", "\n"])
                             for _ in range(length)))
    # Random bytes through a lossy decode: U+FFFD runs mixed with whatever was valid.
    for length in [16, 256, 1500]:
        cases.append(rng.randbytes(length).decode("utf-8", errors="replace"))
    return cases


def byte_cases(rng):
    cases = [bytes([b]) for b in range(256)]
    cases += [
        b"\xe4\xb8",  # a CJK character cut short
        b"\xe4\xb8\xad\xe6",  # one whole, one cut short
        b"\xf0\x9f\x98",  # an emoji cut short
        b"\xff\xfe\x00A",
        b"\xc0\xaf\xed\xa0\x80 overlong and surrogate",
        "\u00e9".encode("utf-8") + b"\x80\x80" + "中".encode("utf-8"),
    ]
    cases += [rng.randbytes(n) for n in [3, 50, 700, 2000]]
    return cases


def world_fixture():
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    tokenizer = TRIE_TOKENIZER(VOCAB)
    rng = random.Random(20230424)
    texts = []
    for text in text_cases(rng):
        ids = tokenizer.encode(text)
        assert tokenizer.decodeBytes(ids) == text.encode("utf-8")
        texts.append({"text": text, "ids": ids})
    raw = []
    for data in byte_cases(rng):
        ids = tokenizer.encodeBytes(data)
        assert tokenizer.decodeBytes(ids) == data
        raw.append({"hex": data.hex(), "ids": ids})
    return {
        "source": "rwkv 0.8.32 rwkv.rwkv_tokenizer.TRIE_TOKENIZER, rwkv_vocab_v20230424.txt",
        "texts": texts,
        "bytes": raw,
    }


def bytes_to_unicode():
    """GPT-2's printable stand-ins for the 256 bytes, which byte-level BPE vocabularies are written in."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def hf_byte_level_fixture():
    to_char = bytes_to_unicode()
    vocab = {to_char[b]: b for b in range(256)}
    merges = []

    def merge(left, right):
        merged = left + right
        merges.append([left, right])
        vocab[merged] = len(vocab)

    space = to_char[ord(" ")]
    for left, right in [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), (space, "w"), ("o", "r"),
                        (space + "w", "or"), ("l", "d"), (space + "wor", "ld"), (space, "t"), (space + "t", "he")]:
        merge(left, right)
    # The UTF-8 of 中 (e4 b8 ad) becomes one token, so its stream must wait for a whole token too.
    zhong = "".join(to_char[b] for b in "中".encode("utf-8"))
    merge(zhong[0], zhong[1])
    merge(zhong[:2], zhong[2])
    end_of_text = len(vocab)
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": end_of_text, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": None,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab, "merges": merges},
    }


def check_hf_fixture(path):
    try:
        from tokenizers import Tokenizer
    except ImportError:
        print("tokenizers not installed; hf_byte_level.json not checked")
        return
    tokenizer = Tokenizer.from_file(path)
    for text in ["hello world", "the 中文 😀 héllo<|endoftext|>"]:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert tokenizer.decode(ids, skip_special_tokens=False) == text, text
    assert tokenizer.encode("hello world the", add_special_tokens=False).ids == [259, 264, 266]


def write_json(name, value, indent=None):
    path = os.path.join(OUT_DIR, name)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(value, f, ensure_ascii=False, indent=indent, separators=(",", ":") if indent is None else None)
        f.write("\n")
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")
    return path


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    write_json("world_cases.json", world_fixture())
    check_hf_fixture(write_json("hf_byte_level.json", hf_byte_level_fixture(), indent=1))


if __name__ == "__main__":
    main()
