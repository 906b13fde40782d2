//! mtree(8)'s encoding of names and link targets: `\ooo` octal escapes for
//! anything that is not a plain printable character.

fn is_plain(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && !b"\\#*?[]".contains(&b)
}

/// Encodes bytes as mtree(8) does (`strsvis` with `VIS_OCTAL`): anything that is
/// not a plain printable character becomes a `\ooo` octal escape.
pub fn encode_into(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        if is_plain(b) {
            out.push(b as char);
        } else {
            out.push('\\');
            out.push(char::from(b'0' + (b >> 6)));
            out.push(char::from(b'0' + ((b >> 3) & 7)));
            out.push(char::from(b'0' + (b & 7)));
        }
    }
}

/// Decodes an mtree-encoded word (octal and C-style escapes).
pub fn decode(word: &str) -> std::result::Result<Vec<u8>, String> {
    let bytes = word.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let rest = &bytes[i + 1..];
        match rest.first() {
            Some(d) if (b'0'..=b'7').contains(d) => {
                let digits: Vec<u8> = rest
                    .iter()
                    .take(3)
                    .take_while(|c| (b'0'..=b'7').contains(c))
                    .copied()
                    .collect();
                let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).map_err(|_| format!("bad octal escape in {word:?}"))?);
                i += 1 + digits.len();
            }
            Some(b'n') => {
                out.push(b'\n');
                i += 2;
            }
            Some(b't') => {
                out.push(b'\t');
                i += 2;
            }
            Some(b's') => {
                out.push(b' ');
                i += 2;
            }
            Some(&c) => {
                out.push(c);
                i += 2;
            }
            None => return Err(format!("dangling backslash in {word:?}")),
        }
    }
    Ok(out)
}
