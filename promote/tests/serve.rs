//! The store-to-store protocol over a socket pair: asking a serving store
//! for an object it does not hold is a typed "not in that store" error
//! (invalid input), not a failure of the other side.

use std::io::BufReader;
use std::os::unix::net::UnixStream;

use fruix_core::testing::TestDir;
use fruix_core::ExitStatus;
use fruix_promote::archive::{export_order, ImportOptions, Trust};
use fruix_promote::serve::{serve, Client};
use fruix_promote::{promote_native_build_result, Error, PromoteOptions, Store};

const ABSENT: &str =
    "0123456789abcdef0123456789abcdef01234567-fruix-native-build-result-15.0-STABLE-local";

#[test]
fn an_object_the_serving_store_lacks_is_not_in_that_store() {
    let dir = TestDir::new();
    let serving = Store::open(&dir.store()).unwrap();
    let root = dir.root("r1", "local", "20260405T213444Z", true);
    promote_native_build_result(&root, &serving, &PromoteOptions::default()).unwrap();
    let here = Store::open(&dir.join("here")).unwrap();
    let trust = Trust::default();
    let options = ImportOptions::new(&trust);
    // Locally, too: absent is not the same as present but unregistered.
    let e = export_order(&serving, &[ABSENT.to_string()], false).unwrap_err();
    assert!(matches!(e, Error::NotInStore { remote: false, .. }), "{e}");
    let (ours, theirs) = UnixStream::pair().unwrap();
    std::thread::scope(|s| {
        let server = s.spawn(|| {
            serve(
                &serving,
                BufReader::new(theirs.try_clone().unwrap()),
                &theirs,
                &options,
            )
        });
        let mut client = Client::start(BufReader::new(ours.try_clone().unwrap()), &ours).unwrap();
        let asked = [ABSENT.to_string()];
        let errors = [
            client.closure(&asked).unwrap_err(),
            client.fetch(&here, &asked, &options).unwrap_err(),
        ];
        for e in errors {
            let shown = e.to_string();
            match &e {
                Error::NotInStore {
                    path,
                    store,
                    remote: true,
                } => {
                    assert_eq!(store, serving.path());
                    assert_eq!(path, &serving.path().join(ABSENT));
                }
                other => panic!("not a NotInStore error: {other:?}"),
            }
            assert_eq!(e.exit_status(), ExitStatus::Usage, "{shown}");
            assert!(!shown.contains("killed"), "{shown}");
        }
        // The session goes on after such an answer.
        assert!(client.valid(&asked).unwrap().is_empty());
        drop(client);
        ours.shutdown(std::net::Shutdown::Both).unwrap();
        server.join().unwrap().unwrap();
    });
}
