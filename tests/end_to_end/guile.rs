//! Guile's reader accepts every S-expression file fruix writes.

use std::path::Path;

use fruix_core::testing::write_sample_result_root;
use fruix_core::PromotionMetadata;

use crate::util::{fruix, require_tool, run, run_ok};

/// Reads `file` with Guile's `read` and evaluates `expr` with the datum bound to `x`.
fn guile_eval(file: &Path, expr: &str) -> String {
    require_tool("guile", "guile-3.0");
    let program = format!(
        "(let ((x (call-with-input-file {:?} read))) (write {expr}) (newline))",
        file.to_str().unwrap()
    );
    let out = run(std::process::Command::new("guile").args(["--no-auto-compile", "-c", &program]));
    assert!(
        out.status.success(),
        "guile could not read {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn guile_reads_promotion_scm() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut m =
        write_sample_result_root(&root, "guest-self-hosted", "20260405T213444Z", true).unwrap();
    // Quotes, backslashes and UTF-8; control characters (a tab included)
    // are refused when fruix reads metadata.
    m.guest_host_name = "builder \"one\" \\ é".into();
    m.closure_path = Some("/frx/store/abc-fruix-builder-closure".into());
    m.write_to(&root).unwrap();
    let file = root.join("promotion.scm");
    assert_eq!(guile_eval(&file, "(car x)"), "fruix-native-build-promotion");
    assert_eq!(
        guile_eval(&file, "(cadr (assq 'guest-host-name (cdr x)))"),
        "\"builder \\\"one\\\" \\\\ é\""
    );
    assert_eq!(
        guile_eval(&file, "(cadr (assq 'format-version (cdr x)))"),
        "1"
    );
    assert_eq!(
        guile_eval(&file, "(length (cdr (assq 'artifacts (cdr x))))"),
        "4"
    );
    assert_eq!(
        guile_eval(
            &file,
            "(cdr (assq 'make-flags (cdr (assq 'build-policy (cdr x)))))"
        ),
        "(\"-DNO_ROOT\")"
    );
    let world_signature = m.artifacts[0].tree_signature.clone().unwrap();
    assert_eq!(
        guile_eval(
            &file,
            "(cadr (assq 'tree-signature (cdr (cadr (assq 'artifacts (cdr x))))))"
        ),
        format!("{:?}", world_signature.as_str())
    );
    assert_eq!(PromotionMetadata::read(&file).unwrap(), m);
}

#[test]
fn guile_reads_store_object_and_bundle_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    write_sample_result_root(&root, "local", "20260405T213444Z", true).unwrap();
    let store = dir.path().join("store");
    let out = run_ok(
        fruix()
            .args(["native-build", "promote", "--quiet", "--store"])
            .arg(&store)
            .arg(&root),
    );
    let kv = crate::util::key_values(&out);
    let world = Path::new(&kv["world_store"]).join(".fruix-native-build-object.scm");
    assert_eq!(guile_eval(&world, "(car x)"), "fruix-native-build-object");
    assert_eq!(
        guile_eval(&world, "(cadr (assq 'artifact (cdr x)))"),
        "\"world\""
    );
    assert_eq!(
        guile_eval(&world, "(cdr (assq 'stripped-modes (cdr x)))"),
        "((mode \"./usr/bin/su\" \"4555\") (mode \"./var/tmp\" \"1555\"))"
    );
    let bundle = Path::new(&kv["result_store"]).join(".fruix-native-build-result.scm");
    assert_eq!(guile_eval(&bundle, "(car x)"), "fruix-native-build-result");
    assert_eq!(
        guile_eval(
            &bundle,
            "(cadr (assq 'store-path (cdr (cadr (assq 'artifacts (cdr x))))))"
        ),
        format!("{:?}", kv["world_store"])
    );
}
