//! Store and guest archives made by hand for tests: raw tar entries with
//! hostile names, and an object's header found and rewritten in a store
//! archive.

/// One raw tar entry: name, type, mode, content, link target.
pub type RawEntry<'a> = (&'a str, tar::EntryType, u32, &'a [u8], Option<&'a str>);

/// A tar archive built entry by entry with the names as given, hostile ones
/// (`..`, absolute) included: what a guest may send to an import.
pub fn raw_archive(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, mode, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        // Write the name bytes directly: set_path refuses `..` and absolute paths.
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(*mode);
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name(l).expect("a link name tar can hold");
        }
        h.set_cksum();
        b.append(&h, *data).expect("appending to a Vec cannot fail");
    }
    b.into_inner().expect("finishing a Vec cannot fail")
}

/// Where `needle` first occurs in `haystack`.
pub fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Where, in the store archive `archive`, the first object whose name
/// contains `infix` starts (its `object LEN` line), with its JSON header
/// and where the header ends; panics when no object's name contains
/// `infix`.
pub fn object_at(archive: &[u8], infix: &str) -> (usize, serde_json::Value) {
    let (start, header, _) = object_header(archive, infix);
    (start, header)
}

/// [`object_at`], with the offset just past the header.
fn object_header(archive: &[u8], infix: &str) -> (usize, serde_json::Value, usize) {
    let mut at = 0;
    while let Some(i) = find_bytes(&archive[at..], b"\nobject ") {
        let start = at + i + 1;
        let eol = start + find_bytes(&archive[start..], b"\n").expect("an object line");
        let len: usize = std::str::from_utf8(&archive[start + 7..eol])
            .expect("an object line in ASCII")
            .parse()
            .expect("the length of a header");
        let header: serde_json::Value =
            serde_json::from_slice(&archive[eol + 1..eol + 1 + len]).expect("a JSON header");
        if header["name"]
            .as_str()
            .expect("a named object")
            .contains(infix)
        {
            return (start, header, eol + 1 + len);
        }
        at = eol;
    }
    panic!("no object {infix} in the archive");
}

/// Rewrites, in the store archive `archive`, the JSON header of the first
/// object whose name contains `infix` with `edit`, keeping its `object LEN`
/// line right; panics when no object's name contains `infix`.
pub fn edit_header(
    archive: &[u8],
    infix: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Vec<u8> {
    let (start, mut header, end) = object_header(archive, infix);
    edit(&mut header);
    let json = serde_json::to_string(&header).expect("JSON text");
    let mut out = archive[..start].to_vec();
    out.extend_from_slice(format!("object {}\n{json}", json.len()).as_bytes());
    out.extend_from_slice(&archive[end..]);
    out
}
