//! Python string and bytes literals, as `repr()` writes them into the World vocabulary file.
//!
//! The official tokenizer reads each token with `eval()`, so this follows Python's rules exactly,
//! including its quirk of keeping unknown escapes (`'\$'` is two characters, backslash and dollar).

/// Appends the bytes a Python literal such as `'a\n'`, `"it's"`, `'\u3000'` or `b'\xff'` stands for;
/// a str literal yields its UTF-8 encoding, which is what the official tokenizer matches against.
pub(crate) fn append_python_literal(literal: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let (is_bytes, quoted) = match literal.strip_prefix(['b', 'B']) {
        Some(rest) => (true, rest),
        None => (false, literal),
    };
    let quote = match quoted.chars().next() {
        Some(quote @ ('\'' | '"')) => quote,
        _ => return Err(format!("`{literal}` is not a quoted Python str or bytes literal")),
    };
    let body = quoted[1..]
        .strip_suffix(quote)
        .ok_or_else(|| format!("`{literal}` does not end with its opening quote"))?;
    // Most tokens need no unescaping; copying them directly halves the vocabulary parse time.
    if !body.contains(['\\', quote]) && (!is_bytes || body.is_ascii()) {
        out.extend_from_slice(body.as_bytes());
        return Ok(());
    }
    unescape(body, quote, is_bytes, out).map_err(|reason| format!("`{literal}`: {reason}"))
}

fn unescape(body: &str, quote: char, is_bytes: bool, out: &mut Vec<u8>) -> Result<(), String> {
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c == quote {
            return Err("unescaped quote inside the literal".into());
        }
        if c != '\\' {
            push_char(out, c, is_bytes)?;
            continue;
        }
        let escaped = chars.next().ok_or("the closing quote is escaped")?;
        match escaped {
            // A backslash before a line break continues the literal on the next line.
            '\n' => {}
            '\\' | '\'' | '"' => out.push(escaped as u8),
            'a' => out.push(0x07),
            'b' => out.push(0x08),
            'f' => out.push(0x0c),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'v' => out.push(0x0b),
            '0'..='7' => {
                let mut value = octal_digit(escaped);
                for _ in 0..2 {
                    match chars.peek() {
                        Some(&next @ '0'..='7') => {
                            value = value * 8 + octal_digit(next);
                            chars.next();
                        }
                        _ => break,
                    }
                }
                push_code(out, value, is_bytes)?;
            }
            // In a str literal `\xNN` is the code point U+00NN (two UTF-8 bytes from 0x80 on), in a
            // bytes literal it is the raw byte; `push_code` keeps that distinction.
            'x' => push_code(out, hex_digits(&mut chars, 2)?, is_bytes)?,
            'u' if !is_bytes => push_code(out, hex_digits(&mut chars, 4)?, false)?,
            'U' if !is_bytes => push_code(out, hex_digits(&mut chars, 8)?, false)?,
            'N' if !is_bytes => return Err("named escapes (\\N{...}) are not supported".into()),
            other => {
                out.push(b'\\');
                push_char(out, other, is_bytes)?;
            }
        }
    }
    Ok(())
}

fn octal_digit(c: char) -> u32 {
    c as u32 - '0' as u32
}

fn hex_digits(chars: &mut impl Iterator<Item = char>, count: usize) -> Result<u32, String> {
    let mut value = 0u32;
    for _ in 0..count {
        let digit = chars
            .next()
            .and_then(|c| c.to_digit(16))
            .ok_or_else(|| format!("an escape needs exactly {count} hex digits"))?;
        value = value * 16 + digit;
    }
    Ok(value)
}

fn push_char(out: &mut Vec<u8>, c: char, is_bytes: bool) -> Result<(), String> {
    if is_bytes && !c.is_ascii() {
        return Err(format!("bytes literals hold only ASCII characters, found {c:?}"));
    }
    let mut utf8 = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
    Ok(())
}

fn push_code(out: &mut Vec<u8>, code: u32, is_bytes: bool) -> Result<(), String> {
    if is_bytes {
        let byte = u8::try_from(code).map_err(|_| format!("byte escape {code:#o} exceeds 0xff"))?;
        out.push(byte);
        return Ok(());
    }
    // Python accepts lone surrogates in a str, but encoding one to UTF-8 fails, as it does here.
    let c = char::from_u32(code).ok_or_else(|| format!("U+{code:04X} cannot be encoded as UTF-8"))?;
    push_char(out, c, false)
}

#[cfg(test)]
mod tests {
    use super::append_python_literal;

    fn parse_python_literal(literal: &str) -> Result<Vec<u8>, String> {
        let mut bytes = Vec::new();
        append_python_literal(literal, &mut bytes).map(|()| bytes)
    }

    fn parse(literal: &str) -> Vec<u8> {
        match parse_python_literal(literal) {
            Ok(bytes) => bytes,
            Err(reason) => panic!("{literal}: {reason}"),
        }
    }

    #[test]
    fn str_literals_become_utf8() {
        assert_eq!(parse(r"'abc'"), b"abc");
        assert_eq!(parse(r#""it's""#), b"it's");
        assert_eq!(parse(r"'\x80'"), "\u{80}".as_bytes());
        assert_eq!(parse(r"'\u3000'"), "\u{3000}".as_bytes());
        assert_eq!(parse(r"'\U0001F600'"), "\u{1F600}".as_bytes());
        assert_eq!(parse("'中文'"), "中文".as_bytes());
        assert_eq!(parse(r#"'\t\n\r\\\'\"'"#), b"\t\n\r\\'\"");
        assert_eq!(parse(r"'\0\101\7777'"), "\0A\u{1FF}7".as_bytes());
    }

    #[test]
    fn bytes_literals_are_raw() {
        assert_eq!(parse(r"b'\xff'"), [0xff]);
        assert_eq!(parse(r#"b"\xe4\xb8""#), [0xe4, 0xb8]);
        assert_eq!(parse(r"b'\u1234'"), br"\u1234");
        assert_eq!(parse(r"b'\377'"), [0xff]);
    }

    #[test]
    fn unknown_escapes_keep_the_backslash() {
        assert_eq!(parse(r"'\$'"), br"\$");
        assert_eq!(parse(r"'\\$'"), br"\$");
        assert_eq!(parse(r"'\q\\'"), br"\q\");
    }

    #[test]
    fn malformed_literals_are_rejected() {
        for bad in [
            "abc",
            "'abc",
            "'abc\"",
            r"'abc\'",
            "'a'b'",
            r"'\x4'",
            r"'\ud800'",
            "b'é'",
            r"b'\400'",
            r"'\N{DASH}'",
        ] {
            assert!(parse_python_literal(bad).is_err(), "{bad} should be rejected");
        }
    }
}
