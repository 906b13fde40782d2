//! The records of a pax extended header (`x`), read by their length as
//! POSIX defines them: `"%d %s=%s\n"`, the decimal length counting the whole
//! record (its digits, the space and the newline included). A value may
//! hold any byte, a newline too: a path is bytes on Unix, and is never
//! required to be UTF-8. Whatever does not have that shape is refused
//! ([`Malformed`]); nothing is read past the header's bytes.

use std::fmt;

/// One record of a pax extended header: its keyword and value, as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Record<'a> {
    /// The keyword (`path`, `linkpath`, `size`...), never empty.
    pub key: &'a [u8],
    /// The value: every byte between the `=` and the record's newline.
    pub value: &'a [u8],
}

/// Why a pax extended header was refused: what is wrong with its record
/// starting at byte `at` of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Malformed {
    /// The record does not start with decimal digits and a space.
    Length { at: usize },
    /// The length cannot hold its own digits, the space, a `=` and the
    /// newline (zero, say).
    TooShort { at: usize, len: usize },
    /// The length goes past the `left` bytes of the header left.
    PastEnd { at: usize, left: usize },
    /// The record has no `=`, or nothing before it.
    NoKey { at: usize },
    /// The record does not end with a newline.
    NoNewline { at: usize },
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed pax extension: ")?;
        match *self {
            Malformed::Length { at } => {
                write!(f, "the record at byte {at} does not start with a decimal length and a space")
            }
            Malformed::TooShort { at, len } => write!(
                f,
                "the record at byte {at} says it is {len} bytes long, too short to hold its own length, `=` and newline"
            ),
            Malformed::PastEnd { at, left } => write!(
                f,
                "the record at byte {at} says it is longer than the {left} bytes left in the header"
            ),
            Malformed::NoKey { at } => write!(f, "the record at byte {at} has no `keyword=`"),
            Malformed::NoNewline { at } => {
                write!(f, "the record at byte {at} does not end with a newline")
            }
        }
    }
}

/// The records of the pax extended header `data`, in order, each read by
/// its length. The first malformed record is the last item.
pub(super) fn records(data: &[u8]) -> Records<'_> {
    Records { data, at: 0 }
}

/// The iterator of [`records`].
pub(super) struct Records<'a> {
    data: &'a [u8],
    /// Where the next record starts.
    at: usize,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at == self.data.len() {
            return None;
        }
        let record = self.record();
        // Nothing is read after a malformed record.
        self.at = match record {
            Ok((_, end)) => end,
            Err(_) => self.data.len(),
        };
        Some(record.map(|(record, _)| record))
    }
}

impl<'a> Records<'a> {
    /// The record at `self.at`, and where it ends.
    fn record(&self) -> Result<(Record<'a>, usize), Malformed> {
        let at = self.at;
        let rest = &self.data[at..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || rest.get(digits) != Some(&b' ') {
            return Err(Malformed::Length { at });
        }
        let past_end = Malformed::PastEnd {
            at,
            left: rest.len(),
        };
        // ASCII digits: UTF-8; too many of them for a usize is past the end.
        let len: usize = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or(past_end)?;
        // The digits, the space, at least `k=` and the newline.
        if len < digits + 4 {
            return Err(Malformed::TooShort { at, len });
        }
        let record = rest.get(..len).ok_or(past_end)?;
        let Some((b'\n', body)) = record[digits + 1..].split_last() else {
            return Err(Malformed::NoNewline { at });
        };
        match body.iter().position(|b| *b == b'=') {
            Some(eq) if eq > 0 => Ok((
                Record {
                    key: &body[..eq],
                    value: &body[eq + 1..],
                },
                at + len,
            )),
            _ => Err(Malformed::NoKey { at }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records as (key, value) pairs.
    type Pairs<'a> = Vec<(&'a [u8], &'a [u8])>;

    /// The records of `data`, as (key, value) pairs, or the first refusal.
    fn read(data: &[u8]) -> Result<Pairs<'_>, Malformed> {
        records(data).map(|r| r.map(|r| (r.key, r.value))).collect()
    }

    #[test]
    fn records_are_read_by_their_length() {
        assert_eq!(read(b""), Ok(vec![]));
        let data = b"9 path=a\n13 linkpath=\n11 size=12\n";
        assert_eq!(
            read(data),
            Ok(vec![
                (&b"path"[..], &b"a"[..]),
                (b"linkpath", b""),
                (b"size", b"12"),
            ])
        );
        // The length counts its own digits: one byte more than `9 path=a`
        // is 11 bytes.
        assert_eq!(read(b"11 path=ab\n"), Ok(vec![(&b"path"[..], &b"ab"[..])]));
        // The shortest record: a one-byte key, an empty value.
        assert_eq!(read(b"5 k=\n"), Ok(vec![(&b"k"[..], &b""[..])]));
    }

    #[test]
    fn a_value_may_hold_a_newline_an_equals_sign_and_bytes_that_are_not_utf8() {
        let data = b"14 path=a\nb=\xff\n9 path=c\n";
        assert_eq!(
            read(data),
            Ok(vec![(&b"path"[..], &b"a\nb=\xff"[..]), (b"path", b"c")])
        );
    }

    #[test]
    fn malformed_records_are_refused_and_end_the_reading() {
        use Malformed::*;
        for (data, refusal) in [
            (&b"path=a\n"[..], Length { at: 0 }),
            (b"9path=a\n", Length { at: 0 }),
            (b" 9 path=a\n", Length { at: 0 }),
            (b"9 path=a\nx", Length { at: 9 }),
            (b"0 path=a\n", TooShort { at: 0, len: 0 }),
            (b"3 \n", TooShort { at: 0, len: 3 }),
            (b"11 path=a\n", PastEnd { at: 0, left: 10 }),
            (b"9 path=a\n9 path=", PastEnd { at: 9, left: 7 }),
            (
                b"99999999999999999999999 path=a\n",
                PastEnd { at: 0, left: 31 },
            ),
            (b"8 patha\n", NoKey { at: 0 }),
            (b"5 =a\n", NoKey { at: 0 }),
            (b"9 path=ab", NoNewline { at: 0 }),
            (b"9 path=a\n8 path=a\n", NoNewline { at: 9 }),
        ] {
            assert_eq!(read(data), Err(refusal), "{}", data.escape_ascii());
            let mut all = records(data);
            while let Some(Ok(_)) = all.next() {}
            assert_eq!(all.next(), None, "nothing after a refusal");
        }
        assert!(Malformed::Length { at: 0 }
            .to_string()
            .starts_with("malformed pax extension: "));
    }
}
