//! The tokenizers against the official RWKV World tokenizer and through the streaming decoder.
//! Fixtures come from tools/make_tokenizer_fixtures.py; nothing here needs Python.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rwkv_wgpu::error::Error;
use rwkv_wgpu::tokenizer::{Tokenizer, Utf8Stream, WorldTokenizer, END_OF_TEXT, WORLD_MODEL_VOCAB_SIZE};
use serde_json::Value;

/// Highest id in the World vocabulary file.
const WORLD_HIGHEST_ID: u32 = 65529;

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer").join(name)
}

fn world_front() -> &'static Tokenizer {
    static WORLD: OnceLock<Tokenizer> = OnceLock::new();
    WORLD.get_or_init(|| Tokenizer::world().expect("the embedded World vocabulary parses"))
}

fn world_tokenizer() -> &'static WorldTokenizer {
    match world_front() {
        Tokenizer::World(world) => world,
        Tokenizer::HuggingFace(_) => unreachable!("Tokenizer::world() built a Hugging Face tokenizer"),
    }
}

fn world_cases() -> Value {
    let text = std::fs::read_to_string(fixture_path("world_cases.json")).expect("fixture is readable");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn ids_of(case: &Value) -> Vec<u32> {
    case["ids"].as_array().expect("ids").iter().map(|id| id.as_u64().expect("id") as u32).collect()
}

fn hex_to_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
}

/// Streams `ids` one at a time and returns the concatenated pieces.
fn stream_all(tokenizer: &Tokenizer, ids: &[u32]) -> String {
    let mut stream = tokenizer.stream();
    let mut text = String::new();
    for &id in ids {
        let piece = stream.push(id).expect("stream accepts the id");
        text.push_str(&piece);
    }
    text.push_str(&stream.finish().expect("stream finishes"));
    text
}

#[test]
fn known_world_ids() {
    let tokenizer = world_front();
    assert_eq!(tokenizer.encode("Hello world").unwrap(), [33155, 40213]);
    assert_eq!(tokenizer.encode("\n\n").unwrap(), [261]);
    assert_eq!(
        tokenizer.encode("The Eiffel tower is in the city of").unwrap(),
        [6699, 304, 25740, 109, 39990, 4600, 4596, 22590, 30449, 4706]
    );
    assert_eq!(tokenizer.encode("").unwrap(), Vec::<u32>::new());
    assert_eq!(tokenizer.vocab_size(), WORLD_MODEL_VOCAB_SIZE);
    assert_eq!(tokenizer.end_of_text(), Some(END_OF_TEXT));
}

#[test]
fn world_texts_match_the_official_tokenizer() {
    let tokenizer = world_front();
    let cases = world_cases();
    let texts = cases["texts"].as_array().expect("texts");
    assert!(texts.len() > 100);
    for case in texts {
        let text = case["text"].as_str().expect("text");
        let expected = ids_of(case);
        assert_eq!(tokenizer.encode(text).unwrap(), expected, "encoding {text:?}");
        assert_eq!(tokenizer.decode_bytes(&expected).unwrap(), text.as_bytes(), "decoding {text:?}");
        assert_eq!(tokenizer.decode(&expected).unwrap(), text);
        assert_eq!(stream_all(tokenizer, &expected), text, "streaming {text:?}");
    }
}

#[test]
fn world_bytes_match_the_official_tokenizer() {
    let world = world_tokenizer();
    let cases = world_cases();
    let raw_cases = cases["bytes"].as_array().expect("bytes");
    for case in raw_cases {
        let bytes = hex_to_bytes(case["hex"].as_str().expect("hex"));
        let expected = ids_of(case);
        assert_eq!(world.encode_bytes(&bytes), expected, "encoding {bytes:02x?}");
        assert_eq!(world.decode_bytes(&expected).unwrap(), bytes);
        let lossy = String::from_utf8_lossy(&bytes);
        assert_eq!(world.decode(&expected).unwrap(), lossy);
        assert_eq!(stream_all(world_front(), &expected), lossy, "streaming {bytes:02x?}");
    }
    for byte in 0..=255u8 {
        assert_eq!(world.encode_bytes(&[byte]), [u32::from(byte) + 1]);
    }
}

#[test]
fn every_world_token_round_trips() {
    let world = world_tokenizer();
    let all_ids: Vec<u32> = (1..=WORLD_HIGHEST_ID).collect();
    let all_bytes = world.decode_bytes(&all_ids).unwrap();
    let mut offset = 0;
    for &id in &all_ids {
        let token = world.token_bytes(id).unwrap();
        assert!(!token.is_empty(), "token {id} is empty");
        assert_eq!(&all_bytes[offset..offset + token.len()], token);
        offset += token.len();
        // A token is the longest match for itself, unless a longer token merely repeats a prefix of it,
        // which greedy matching cannot reach; the World vocabulary has no such case.
        assert_eq!(world.encode_bytes(token), [id], "token {id} = {token:02x?}");
    }
    assert_eq!(offset, all_bytes.len());
}

#[test]
fn padding_and_end_of_text_decode_to_nothing() {
    let tokenizer = world_front();
    let padding: Vec<u32> = (WORLD_HIGHEST_ID + 1..WORLD_MODEL_VOCAB_SIZE as u32).collect();
    assert_eq!(tokenizer.decode_bytes(&padding).unwrap(), b"");
    assert_eq!(tokenizer.decode(&[33155, END_OF_TEXT, 40213]).unwrap(), "Hello world");
}

#[test]
fn out_of_range_ids_are_errors() {
    let tokenizer = world_front();
    for id in [WORLD_MODEL_VOCAB_SIZE as u32, 100_000, u32::MAX] {
        match tokenizer.decode(&[33155, id]) {
            Err(Error::TokenOutOfRange { id: reported, vocab }) => {
                assert_eq!((reported, vocab), (id, WORLD_MODEL_VOCAB_SIZE));
            }
            other => panic!("decoding id {id} gave {other:?}"),
        }
        assert!(tokenizer.decode_bytes(&[id]).is_err());
        assert!(tokenizer.stream().push(id).is_err());
    }
}

#[test]
fn stream_reassembles_split_characters() {
    let tokenizer = world_front();
    // 😀 has no token of its own: it arrives as a two-byte token and two single bytes.
    let text = "a😀b中";
    let ids = tokenizer.encode(text).unwrap();
    assert_eq!(ids, [98, 3319, 153, 129, 99, 10285]);
    let mut stream = tokenizer.stream();
    let pieces: Vec<String> = ids.iter().map(|&id| stream.push(id).unwrap()).collect();
    assert_eq!(pieces, ["a", "", "", "😀", "b", "中"]);
    assert_eq!(stream.finish().unwrap(), "");

    // An unfinished character at the end is flushed as one replacement character.
    let mut stream = tokenizer.stream();
    assert_eq!(stream.push(0xF0 + 1).unwrap(), "");
    assert_eq!(stream.push(0x9F + 1).unwrap(), "");
    assert_eq!(stream.finish().unwrap(), "\u{FFFD}");
}

#[test]
fn utf8_stream_matches_lossy_decoding_for_any_split() {
    let bytes = b"x\xe4\xb8\xad\xff\xf0\x9f\x98\x80\xe4\xb8z\xc3";
    let expected = String::from_utf8_lossy(bytes);
    for split in 0..=bytes.len() {
        for second_split in split..=bytes.len() {
            let mut stream = Utf8Stream::new();
            let mut text = stream.push(&bytes[..split]);
            text += &stream.push(&bytes[split..second_split]);
            text += &stream.push(&bytes[second_split..]);
            text += &stream.finish();
            assert_eq!(text, expected, "split at {split} and {second_split}");
        }
    }
}

#[test]
fn world_vocabulary_parse_errors() {
    let single_bytes: String =
        (0..=255u8).map(|byte| format!("{} b'\\x{byte:02x}' 1\n", u32::from(byte) + 1)).collect();
    assert!(WorldTokenizer::from_vocab_text(&single_bytes).is_ok());
    for bad_line in [
        "300 'ab' 3",         // wrong length
        "300 'ab 2",          // unterminated
        "300 b'\\xff' 2",     // wrong length for bytes
        "0 'ab' 2",           // id 0 is end of text
        "1 'ab' 2",           // duplicate id
        "300 '\\x00' 1",      // duplicate token
        "300 'a\\ud800' 4",   // surrogate
        "300",                // no literal
        "x 'ab' 2",           // bad id
        "99999999999 'ab' 2", // id out of range
    ] {
        let text = format!("{single_bytes}{bad_line}\r\n");
        assert!(WorldTokenizer::from_vocab_text(&text).is_err(), "{bad_line} should be rejected");
    }
    let missing_byte = single_bytes.replace("66 b'\\x41' 1\n", "");
    assert!(WorldTokenizer::from_vocab_text(&missing_byte).is_err());
}

#[test]
fn world_vocabulary_file_loads_like_the_embedded_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/world/rwkv_vocab_v20230424.txt");
    let tokenizer = Tokenizer::from_file(&path).unwrap();
    assert_eq!(tokenizer.encode("Hello world").unwrap(), [33155, 40213]);
    assert!(matches!(Tokenizer::from_file(Path::new("/nonexistent/vocab.txt")), Err(Error::Io { .. })));
}

#[test]
fn hugging_face_word_level() {
    let tokenizer = Tokenizer::from_file(&fixture_path("hf_word_level.json")).unwrap();
    let ids = tokenizer.encode("hello world the cat").unwrap();
    assert_eq!(ids, [1, 2, 5, 6]);
    assert_eq!(tokenizer.decode(&ids).unwrap(), "hello world the cat");
    assert_eq!(tokenizer.decode_bytes(&ids).unwrap(), b"hello world the cat");
    assert_eq!(tokenizer.encode("hello dog").unwrap(), [1, 0]);
    assert_eq!(tokenizer.vocab_size(), 7);
    assert_eq!(stream_all(&tokenizer, &ids), "hello world the cat");
    assert!(matches!(tokenizer.decode(&[1, 7]), Err(Error::TokenOutOfRange { id: 7, vocab: 7 })));
    let mut stream = tokenizer.stream();
    assert_eq!(stream.push(1).unwrap(), "hello");
    assert!(matches!(stream.push(7), Err(Error::TokenOutOfRange { id: 7, vocab: 7 })));
    assert_eq!(stream.push(2).unwrap(), " world", "a rejected id leaves the stream usable");
}

#[test]
fn hugging_face_byte_level() {
    let tokenizer = Tokenizer::from_file(&fixture_path("hf_byte_level.json")).unwrap();
    assert_eq!(tokenizer.encode("hello world the").unwrap(), [259, 264, 266]);
    assert_eq!(tokenizer.end_of_text(), Some(269));
    assert_eq!(tokenizer.vocab_size(), 270);
    for text in ["hello world", "the 中文 😀 héllo<|endoftext|>", "  spaces\n\nand\tTabs ", ""] {
        let ids = tokenizer.encode(text).unwrap();
        assert_eq!(tokenizer.decode(&ids).unwrap(), text);
        assert_eq!(stream_all(&tokenizer, &ids), text, "streaming {text:?}");
    }
    let ids = tokenizer.encode("a😀").unwrap();
    assert_eq!(ids.len(), 5, "one token per byte");
    let mut stream = tokenizer.stream();
    let pieces: Vec<String> = ids.iter().map(|&id| stream.push(id).unwrap()).collect();
    assert_eq!(pieces, ["a", "", "", "", "😀"]);
    assert!(matches!(tokenizer.decode(&[270]), Err(Error::TokenOutOfRange { id: 270, vocab: 270 })));
}

#[test]
fn broken_tokenizer_files_are_errors() {
    assert!(matches!(Tokenizer::from_file(Path::new("/nonexistent/tokenizer.json")), Err(Error::Io { .. })));
    let not_json = fixture_path("world_cases.json");
    assert!(matches!(Tokenizer::from_file(&not_json), Err(Error::Malformed { .. })));
}

#[test]
fn world_encoding_is_fast_enough() {
    let world = world_tokenizer();
    let cases = world_cases();
    let mut text = String::new();
    while text.len() < 1 << 20 {
        for case in cases["texts"].as_array().expect("texts") {
            text.push_str(case["text"].as_str().expect("text"));
        }
    }
    let start = std::time::Instant::now();
    let ids = world.encode(&text);
    let elapsed = start.elapsed();
    assert_eq!(world.decode_bytes(&ids).unwrap(), text.as_bytes());
    // Generous, for unoptimised builds on a loaded machine; release encodes 1 MB in milliseconds.
    assert!(elapsed.as_secs_f64() < 5.0, "encoding 1 MB took {elapsed:?}");
}

/// A `tokenizer.json` that asks for truncation and padding (as exported ones often do) still
/// reads text whole: a prompt is never cut or padded unseen, and a truncation stride beyond its
/// length (which the tokenizers crate panics on) changes nothing.
#[test]
fn truncation_and_padding_in_tokenizer_json_are_ignored() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/tokenizer.json");
    let mut json: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    json["truncation"] =
        serde_json::json!({"direction": "Right", "max_length": 3, "strategy": "LongestFirst", "stride": 8});
    json["padding"] = serde_json::json!({"strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": null,
        "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"});
    let asking = std::env::temp_dir().join(format!("tokenizer-{}.json", std::process::id()));
    std::fs::write(&asking, serde_json::to_vec(&json).unwrap()).unwrap();
    let (plain, asking) = (Tokenizer::from_file(&path).unwrap(), Tokenizer::from_file(&asking).unwrap());
    let text = "ROMEO: more than three tokens, fewer than 64.";
    let expected = plain.encode(text).unwrap();
    assert!(expected.len() > 3 && expected.len() < 64, "{}", expected.len());
    assert_eq!(asking.encode(text).unwrap(), expected);
}
