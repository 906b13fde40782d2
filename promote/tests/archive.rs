//! Export and import of store archives: a round trip keeps content and
//! signatures, and every kind of tampering is refused without changing the
//! store.

use std::fs;
use std::path::Path;

use fruix_core::testing::{edit_header, find_bytes, object_at, TestDir};
use fruix_promote::archive::{
    export, export_order, import, ArchiveLimits, ImportOptions, ImportReport, Trust,
};
use fruix_promote::error::ArchiveProblem;
use fruix_promote::sign::{sign_object, PublicKey, SecretKey};
use fruix_promote::verify::{object_paths, verify_object};
use fruix_promote::{promote_native_build_result, Error, PromoteOptions, Store};

struct Fixture {
    dir: TestDir,
    /// The key the importing store trusts.
    key: SecretKey,
    /// Another key that signed every object too.
    intruder: SecretKey,
}

impl Fixture {
    /// Promotes the sample result root, signs every object, and exports
    /// the bundle's closure; the store is then moved away, so that the
    /// archive can be imported into an empty store at the same path.
    fn exported() -> (Fixture, Vec<u8>, Vec<String>) {
        let fixture = Fixture {
            dir: TestDir::new(),
            key: SecretKey::generate("builder-1").unwrap(),
            intruder: SecretKey::generate("intruder").unwrap(),
        };
        let root = fixture.dir.root("r1", "local", "20260405T213444Z", true);
        let store = Store::open(&fixture.dir.store()).unwrap();
        let report =
            promote_native_build_result(&root, &store, &PromoteOptions::default()).unwrap();
        let bundle = name_of(&report.result_store);
        let order = export_order(&store, &[bundle], true).unwrap();
        for name in &order {
            sign_object(&store, name, &fixture.key).unwrap();
            sign_object(&store, name, &fixture.intruder).unwrap();
        }
        let mut archive = Vec::new();
        export(&store, &order, &mut archive, None).unwrap();
        drop(store);
        fs::rename(fixture.dir.store(), fixture.dir.join("exported")).unwrap();
        (fixture, archive, order)
    }

    fn trust(&self) -> Trust {
        Trust {
            keys: vec![PublicKey::parse(&self.key.public_text()).unwrap()],
            check_signatures: true,
        }
    }

    fn import(&self, archive: &[u8], trust: &Trust) -> Result<ImportReport, Error> {
        let store = Store::open(&self.dir.store()).unwrap();
        import(&store, archive, &options(trust, ArchiveLimits::default()))
    }

    /// Creates the empty store the archives import into, so that
    /// [`Fixture::contents`] lists what an import leaves in it.
    fn create_store(&self) {
        drop(Store::open(&self.dir.store()).unwrap());
    }

    /// Imports `crafted` (an archive and the name of its last object, as
    /// [`crafted`] returns them) without signature checks, which must
    /// succeed; runs `check` on the report and the imported object, then
    /// leaves the store empty again.
    fn imports_crafted(
        &self,
        (archive, name): (Vec<u8>, String),
        check: impl FnOnce(&ImportReport, &Path),
    ) {
        let report = self.import(&archive, &unchecked()).unwrap();
        check(&report, &self.dir.store().join(name));
        fs::remove_dir_all(self.dir.store()).unwrap();
        self.create_store();
    }

    /// Imports `crafted` (as [`crafted`] returns it) without signature
    /// checks, which must be refused as malformed and leave the store as it
    /// was; `what` names the case.
    fn refuses_crafted(&self, what: &str, (archive, _): (Vec<u8>, String)) {
        let before = self.contents();
        let e = self.import(&archive, &unchecked()).unwrap_err();
        assert_eq!(self.contents(), before, "{e}: something left behind");
        assert_eq!(problem(&e), ArchiveProblem::Malformed, "{what}: {e}");
    }

    /// The store's objects, pool entries and leftovers (temporaries), but
    /// not its locks and database.
    fn contents(&self) -> Vec<String> {
        let mut out = Vec::new();
        for dir in [self.dir.store(), self.dir.store().join(".links")] {
            for e in fs::read_dir(&dir).unwrap().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if ![".links", ".locks", ".lock", ".fruix"].contains(&name.as_str()) {
                    out.push(name);
                }
            }
        }
        out.sort();
        out
    }
}

fn options(trust: &Trust, limits: ArchiveLimits) -> ImportOptions<'_> {
    ImportOptions {
        trust,
        limits,
        progress: None,
        whole_input: true,
    }
}

fn name_of(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

fn problem(e: &Error) -> ArchiveProblem {
    match e {
        Error::ArchiveRefused { problem, .. } => *problem,
        other => panic!("not a refusal: {other}"),
    }
}

#[test]
fn an_archive_imported_into_an_empty_store_keeps_content_and_signatures() {
    let (fixture, archive, order) = Fixture::exported();
    let report = fixture.import(&archive, &fixture.trust()).unwrap();
    assert_eq!(report.imported.len(), order.len());
    assert_eq!(report.bytes, archive.len() as u64);
    let store = Store::open(&fixture.dir.store()).unwrap();
    for path in object_paths(&store).unwrap() {
        let outcome = verify_object(&path, None, None);
        assert!(outcome.ok, "{}: {:?}", path.display(), outcome);
    }
    for name in &order {
        // Only the signature a trusted key verifies is kept.
        let signatures = store.db().signatures(name).unwrap();
        assert_eq!(signatures.len(), 1, "{name}");
        assert!(signatures[0].starts_with("builder-1:"));
    }
    // The tree, modes and links are the exported ones.
    let exported = fixture.dir.join("exported");
    for name in &order {
        let (a, b) = (exported.join(name), fixture.dir.store().join(name));
        let diff = std::process::Command::new("diff")
            .args(["-r", "--no-dereference"])
            .args([&a, &b])
            .output()
            .unwrap();
        assert!(diff.status.success(), "{name}: {diff:?}");
    }
    // Importing it again adds nothing.
    let again = fixture.import(&archive, &fixture.trust()).unwrap();
    assert!(again.imported.is_empty());
    assert_eq!(again.present.len(), order.len());
}

#[test]
fn tampered_forged_untrusted_reordered_and_cut_short_archives_are_refused_leaving_the_store_unchanged(
) {
    let (fixture, archive, _) = Fixture::exported();
    let trust = fixture.trust();
    let mut cases: Vec<(&str, Vec<u8>, ArchiveProblem)> = Vec::new();

    let i = find_bytes(&archive, b"sample kernel").unwrap();
    let mut tampered = archive.clone();
    tampered[i] ^= 0x20;
    cases.push(("a tampered byte", tampered, ArchiveProblem::Tampered));

    let forged = edit_header(&archive, "native-kernel", |h| {
        let signatures = h["signatures"].as_array_mut().unwrap();
        signatures.retain(|s| s.as_str().unwrap().starts_with("builder-1:"));
        let s = h["signatures"][0].as_str().unwrap().to_string();
        let (name, data) = s.split_once(':').unwrap();
        let mut bytes = data.as_bytes().to_vec();
        bytes[5] = if bytes[5] == b'A' { b'B' } else { b'A' };
        h["signatures"][0] = format!("{name}:{}", String::from_utf8(bytes).unwrap()).into();
    });
    cases.push(("a forged signature", forged, ArchiveProblem::Untrusted));

    // Validly signed, by a key this store does not trust.
    let by_intruder = edit_header(&archive, "native-world", |h| {
        let signatures = h["signatures"].as_array_mut().unwrap();
        signatures.retain(|s| s.as_str().unwrap().starts_with("intruder:"));
        assert_eq!(signatures.len(), 1);
    });
    cases.push(("an unknown key", by_intruder, ArchiveProblem::Untrusted));

    let unsigned = edit_header(&archive, "native-headers", |h| {
        h["signatures"] = serde_json::json!([]);
    });
    cases.push(("no signature", unsigned, ArchiveProblem::Untrusted));

    let reordered = edit_header(&archive, "native-build-result", |h| {
        let refs = h["references"].as_str().unwrap();
        let mut lines: Vec<&str> = refs.lines().collect();
        assert!(lines.len() > 2, "{refs}");
        lines.reverse();
        h["references"] = format!("{}\n", lines.join("\n")).into();
    });
    cases.push((
        "a reordered reference list",
        reordered,
        ArchiveProblem::Tampered,
    ));

    // Still canonical, but not what the bundle's metadata names.
    let unnamed = edit_header(&archive, "native-build-result", |h| {
        let refs = h["references"].as_str().unwrap();
        let kept: String = refs
            .lines()
            .filter(|l| !l.contains("-freebsd-source-"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_ne!(kept, refs);
        h["references"] = kept.into();
    });
    cases.push((
        "references the bundle's metadata does not name",
        unnamed,
        ArchiveProblem::Tampered,
    ));

    let renamed = edit_header(&archive, "native-bootloader", |h| {
        let name = h["name"].as_str().unwrap().replacen('a', "b", 1);
        h["name"] = name.into();
    });
    cases.push(("a renamed object", renamed, ArchiveProblem::Tampered));

    // Cut short everywhere that matters: in the magic line, in a header,
    // in a file, in a tree, and just before the last line.
    let header = find_bytes(&archive, b"{\"name\"").unwrap();
    let file = find_bytes(&archive, b"sample kernel").unwrap();
    let tree_end = find_bytes(&archive, b"\nend\n").unwrap();
    for cut in [
        5,
        header + 10,
        file + 3,
        tree_end + 2,
        archive.len() - 1,
        archive.len() - 5,
    ] {
        cases.push((
            "an archive cut short",
            archive[..cut].to_vec(),
            ArchiveProblem::Truncated,
        ));
    }
    fixture.create_store();
    let mut trailing = archive.clone();
    trailing.extend_from_slice(b"more\n");
    cases.push(("data after the end", trailing, ArchiveProblem::Malformed));
    let before = fixture.contents();
    for (what, bad, expected) in cases {
        let e = fixture.import(&bad, &trust).unwrap_err();
        assert_eq!(problem(&e), expected, "{what}: {e}");
        assert!(e.to_string().contains("the store was not changed"), "{e}");
        assert_eq!(fixture.contents(), before, "{what} left something behind");
    }
    let store = Store::open(&fixture.dir.store()).unwrap();
    assert!(object_paths(&store).unwrap().is_empty());
    // The intact archive still imports after all that.
    drop(store);
    fixture.import(&archive, &trust).unwrap();
}

#[test]
fn without_signature_checks_an_unsigned_archive_imports_and_keeps_no_untrusted_signature() {
    let (fixture, archive, order) = Fixture::exported();
    let nobody = Trust {
        keys: Vec::new(),
        check_signatures: false,
    };
    let report = fixture.import(&archive, &nobody).unwrap();
    assert_eq!(report.imported.len(), order.len());
    let store = Store::open(&fixture.dir.store()).unwrap();
    for name in &order {
        assert!(store.db().signatures(name).unwrap().is_empty(), "{name}");
    }
}

#[test]
fn an_archive_from_a_store_at_another_path_or_missing_a_reference_is_refused() {
    let (fixture, archive, _) = Fixture::exported();
    let other = tempfile::tempdir().unwrap();
    let store = Store::open(&other.path().join("store")).unwrap();
    let trust = fixture.trust();
    let e = import(
        &store,
        &archive[..],
        &options(&trust, ArchiveLimits::default()),
    )
    .unwrap_err();
    assert_eq!(problem(&e), ArchiveProblem::ForeignStore, "{e}");
    // The bundle alone: its artifacts are neither in the store nor before it.
    let bundle_at = find_bytes(&archive, b"native-build-result").unwrap();
    let object_start = archive[..bundle_at]
        .windows(8)
        .rposition(|w| w == b"\nobject ")
        .unwrap()
        + 1;
    let store_line_end = find_bytes(&archive[16..], b"\n").unwrap() + 17;
    let mut alone = archive[..store_line_end].to_vec();
    alone.extend_from_slice(&archive[object_start..]);
    let e = fixture.import(&alone, &fixture.trust()).unwrap_err();
    assert_eq!(problem(&e), ArchiveProblem::MissingReference, "{e}");
}

#[test]
fn caps_bound_what_an_archive_can_make_the_importer_do() {
    let (fixture, archive, _) = Fixture::exported();
    let store = Store::open(&fixture.dir.store()).unwrap();
    // The default limits with one of them lowered.
    let lowered = |lower: fn(&mut ArchiveLimits)| {
        let mut limits = ArchiveLimits::default();
        lower(&mut limits);
        limits
    };
    for limits in [
        lowered(|l| l.max_bytes = 1000),
        lowered(|l| l.max_header_bytes = 100),
        lowered(|l| l.max_entries = 3),
        lowered(|l| l.max_objects = 2),
    ] {
        let trust = fixture.trust();
        let e = import(&store, &archive[..], &options(&trust, limits)).unwrap_err();
        assert_eq!(problem(&e), ArchiveProblem::TooLarge, "{limits:?}: {e}");
    }
    assert!(object_paths(&store).unwrap().is_empty());
}

#[test]
fn what_an_archive_says_is_escaped_in_refusals() {
    let (fixture, archive, _) = Fixture::exported();
    let replace = |from: &[u8], to: &[u8]| {
        let i = find_bytes(&archive, from).unwrap();
        [&archive[..i], to, &archive[i + from.len()..]].concat()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a bad first line",
            replace(b"fruix-archive 1\n", b"fruix-archive 1\x1b[2K\n"),
        ),
        (
            "a bad object line",
            replace(b"\nobject ", b"\nobjekt\x1b[2K "),
        ),
        (
            "a bad name",
            edit_header(&archive, "native-kernel", |h| {
                h["name"] = "\x1b[31mevil\nok".into();
            }),
        ),
        (
            "an unknown header field",
            edit_header(&archive, "native-kernel", |h| {
                h["\x1b[31m\nok forged"] = 1.into();
            }),
        ),
        ("a bad tree line", replace(b"\n./", b"\n\x1b[2K/")),
        (
            "an unknown signer",
            edit_header(&archive, "native-world", |h| {
                h["signatures"] = serde_json::json!(["\x1b[31m\nok:AAAA"]);
            }),
        ),
    ];
    for (what, bad) in cases {
        let e = fixture.import(&bad, &fixture.trust()).unwrap_err();
        let shown = e.to_string();
        assert!(matches!(e, Error::ArchiveRefused { .. }), "{what}: {shown}");
        for raw in ["Escaped", "\x1b", "\n"] {
            assert!(!shown.contains(raw), "{what}: {shown:?}");
        }
    }
}

/// An archive line and, for a file, its bytes.
type TreeLine<'a> = (String, &'a [u8]);
/// Manifest paths and the modes a metadata lists as stripped.
type Stripped = Vec<(String, u32)>;

/// A file's tree line (store mode `mode`) and its bytes.
fn file_line<'a>(path: &str, mode: u32, data: &'a [u8]) -> TreeLine<'a> {
    use sha2::Digest;
    (
        format!(
            "{path} type=file mode={mode:04o} size={} sha256digest={}",
            data.len(),
            hex::encode(sha2::Sha256::digest(data))
        ),
        data,
    )
}

/// A line without a body (a directory's or a symlink's).
fn plain_line(line: &str) -> TreeLine<'static> {
    (line.to_string(), b"")
}

/// `archive` up to the artifact whose name contains `infix`, then that
/// artifact with `tree` as its tree and metadata that commits to it (with
/// `stripped` as its stripped modes), as someone without a trusted key can
/// make it; the archive ends after it. Returns the archive and the
/// artifact's new name.
fn crafted(
    archive: &[u8],
    infix: &str,
    tree: &[TreeLine<'_>],
    stripped: Vec<(String, u32)>,
) -> (Vec<u8>, String) {
    use fruix_core::manifest::{parse_line, ManifestBuilder};
    use fruix_promote::object::ObjectIdentity;
    let (start, mut header) = object_at(archive, infix);
    let mut identity =
        ObjectIdentity::from_text(Path::new("m"), header["metadata"].as_str().unwrap()).unwrap();
    // The signature the importer computes: each line, with the special bits
    // the metadata lists put back.
    let mut builder = ManifestBuilder::new();
    for (line, _) in tree {
        let mut entry = parse_line(line).unwrap();
        if let Some((_, mode)) = stripped.iter().find(|(p, _)| *p == entry.manifest_path()) {
            entry.mode = *mode;
        }
        builder.add(&entry);
    }
    identity.tree_signature = builder.finish().0;
    identity.stripped_modes = stripped;
    let name = identity.store_name();
    header["name"] = name.clone().into();
    header["metadata"] = identity.to_scheme().into();
    header["signatures"] = serde_json::json!([]);
    let json = serde_json::to_string(&header).unwrap();
    let mut out = archive[..start].to_vec();
    out.extend_from_slice(format!("object {}\n{json}\n", json.len()).as_bytes());
    for (line, data) in tree {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(data);
    }
    out.extend_from_slice(b"end\nend-archive\n");
    (out, name)
}

fn unchecked() -> Trust {
    Trust {
        keys: Vec::new(),
        check_signatures: false,
    }
}

#[test]
fn an_entry_whose_directory_is_not_the_one_open_before_it_is_refused() {
    let (fixture, archive, _) = Fixture::exported();
    fixture.create_store();
    // The crafting itself is sound: the same shape with ./b declared imports.
    let sound = crafted(
        &archive,
        "native-kernel",
        &[
            plain_line(". type=dir mode=0555"),
            plain_line("./a type=dir mode=0555"),
            file_line("./a/x", 0o444, b"x\n"),
            plain_line("./b type=dir mode=0555"),
            file_line("./b/y", 0o444, b"y\n"),
        ],
        Vec::new(),
    );
    fixture.imports_crafted(sound, |report, object| {
        assert!(report.imported.contains(&object.to_path_buf()));
        assert_eq!(fs::read(object.join("b/y")).unwrap(), b"y\n");
        assert!(verify_object(object, None, None).ok);
    });

    let cases: Vec<(&str, Vec<TreeLine<'_>>)> = vec![
        (
            "./b/y after ./a/x, ./b never declared",
            vec![
                plain_line(". type=dir mode=0555"),
                plain_line("./a type=dir mode=0555"),
                file_line("./a/x", 0o444, b"x\n"),
                file_line("./b/y", 0o444, b"y\n"),
            ],
        ),
        (
            "./a/x below the file ./a",
            vec![
                plain_line(". type=dir mode=0555"),
                file_line("./a", 0o444, b"a\n"),
                file_line("./a/x", 0o444, b"x\n"),
            ],
        ),
        (
            "./a/x below the symlink ./a",
            vec![
                plain_line(". type=dir mode=0555"),
                plain_line("./a type=link link=/tmp"),
                file_line("./a/x", 0o444, b"x\n"),
            ],
        ),
        (
            "./a/b/c with ./a/b never declared",
            vec![
                plain_line(". type=dir mode=0555"),
                plain_line("./a type=dir mode=0555"),
                file_line("./a/b/c", 0o444, b"c\n"),
            ],
        ),
    ];
    for (what, tree) in cases {
        fixture.refuses_crafted(what, crafted(&archive, "native-kernel", &tree, Vec::new()));
    }
}

#[test]
fn special_bits_the_metadata_does_not_list_and_modes_no_tree_has_are_refused() {
    let (fixture, archive, _) = Fixture::exported();
    fixture.create_store();
    let tree = |line: TreeLine<'static>| {
        vec![
            plain_line(". type=dir mode=0555"),
            plain_line("./bin type=dir mode=0555"),
            line,
        ]
    };
    let su = |mode| file_line("./bin/su", mode, b"su\n");
    let listed = |mode: u32| vec![("./bin/su".to_string(), mode)];
    // As a fruix export writes it: store modes in lines, special bits listed.
    let sound = crafted(&archive, "native-world", &tree(su(0o555)), listed(0o4555));
    fixture.imports_crafted(sound, |_, object| {
        assert!(verify_object(object, None, None).ok);
    });

    let cases: Vec<(&str, Vec<TreeLine<'_>>, Stripped)> = vec![
        ("setuid, not listed", tree(su(0o4555)), Vec::new()),
        (
            "sticky dir, not listed",
            vec![
                plain_line(". type=dir mode=0555"),
                plain_line("./tmp type=dir mode=1555"),
            ],
            Vec::new(),
        ),
        ("setgid, listed as setuid", tree(su(0o2555)), listed(0o4555)),
        (
            "listed with other permission bits",
            tree(su(0o444)),
            listed(0o4555),
        ),
        ("a group-writable file", tree(su(0o664)), Vec::new()),
        ("a world-writable file", tree(su(0o666)), Vec::new()),
        ("a file of mode 0644", tree(su(0o644)), Vec::new()),
        ("a file mode with type bits", tree(su(0o100444)), Vec::new()),
        (
            "a world-writable directory",
            tree(plain_line("./bin/x type=dir mode=0777")),
            Vec::new(),
        ),
        (
            "a symlink with a mode",
            tree(plain_line("./bin/x type=link mode=0777 link=y")),
            Vec::new(),
        ),
    ];
    for (what, tree, stripped) in cases {
        fixture.refuses_crafted(what, crafted(&archive, "native-world", &tree, stripped));
    }
}

#[test]
fn a_symlink_target_no_system_can_hold_is_refused_as_malformed() {
    let (fixture, archive, _) = Fixture::exported();
    fixture.create_store();
    // PATH_MAX counts the NUL that ends a path.
    let longest = "t".repeat(libc::PATH_MAX as usize - 1);
    let long = format!("{longest}t");
    let link = |target: &str| {
        vec![
            plain_line(". type=dir mode=0555"),
            plain_line(&format!("./l type=link link={target}")),
        ]
    };
    let sound = crafted(&archive, "native-kernel", &link(&longest), Vec::new());
    fixture.imports_crafted(sound, |_, object| {
        let target = fs::read_link(object.join("l")).unwrap();
        assert_eq!(target.as_os_str().len(), longest.len());
    });
    for (what, target) in [("a NUL byte", "a\\000b"), ("over PATH_MAX", long.as_str())] {
        let bad = crafted(&archive, "native-kernel", &link(target), Vec::new());
        fixture.refuses_crafted(what, bad);
    }
}

#[test]
fn references_an_artifact_s_or_source_s_metadata_does_not_imply_are_refused() {
    let (fixture, archive, _) = Fixture::exported();
    let trust = fixture.trust();
    fixture.create_store();
    let with_references = |infix: &str, edit: fn(&str) -> String| {
        edit_header(&archive, infix, |h| {
            let refs = edit(h["references"].as_str().unwrap());
            h["references"] = refs.into();
        })
    };
    let cases = [
        // Outside the store, so never a registered reference: such lines
        // did not reach the signed fingerprint.
        (
            "a line added before the source",
            with_references("native-kernel", |r| format!("/a/\x1b[2Jevil\n{r}")),
        ),
        (
            "a line added after the source",
            with_references("native-kernel", |r| format!("{r}/zzz/\x1b[2Jevil\n")),
        ),
        (
            "the source dropped",
            with_references("native-kernel", |_| String::new()),
        ),
    ];
    let before = fixture.contents();
    for (what, bad) in cases {
        assert_ne!(bad, archive);
        let e = fixture.import(&bad, &trust).unwrap_err();
        assert_eq!(problem(&e), ArchiveProblem::Tampered, "{what}: {e}");
        assert!(!e.to_string().contains('\x1b'), "{what}: {e}");
        assert_eq!(fixture.contents(), before, "{what} left something behind");
    }
    fixture.import(&archive, &trust).unwrap();
}

#[test]
fn export_order_refuses_what_is_no_object_name_before_looking_at_any_path() {
    let (fixture, archive, order) = Fixture::exported();
    fixture.import(&archive, &fixture.trust()).unwrap();
    let store = Store::open(&fixture.dir.store()).unwrap();
    let outside = fixture.dir.join("outside");
    fs::create_dir(&outside).unwrap();
    let through = format!("{}/../../outside", order[0]);
    let absent_through = format!("{}/../../absent", order[0]);
    let names = [
        outside.to_string_lossy().into_owned(),
        fixture.dir.join("absent").to_string_lossy().into_owned(),
        through,
        absent_through,
        "../outside".to_string(),
        "../absent".to_string(),
    ];
    for name in names {
        for recursive in [false, true] {
            let e = export_order(&store, std::slice::from_ref(&name), recursive).unwrap_err();
            assert!(matches!(e, Error::NotAStoreObject { .. }), "{name}: {e:?}");
        }
    }
    // A registered object's name still works.
    assert!(!export_order(&store, &order[..1], false).unwrap().is_empty());
}
