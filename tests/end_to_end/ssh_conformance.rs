//! `host-initiated` and `guest-self-hosted` against the executor conformance
//! suite, with a real loopback sshd as the guest.

use std::sync::Arc;

use fruix_core::executor::{BuildRequest, Executor, Registry};
use fruix_core::testing::conformance::{Case, Suite};
use fruix_core::testing::fixture_request;

use crate::sshd::Sshd;
use crate::util::{fixture_source, require_tool};

/// A request with its own run id (the guest keeps every run's result root).
fn request(run_id: &str, make_flags: &[&str]) -> BuildRequest {
    BuildRequest {
        source_dir: None,
        run_id: run_id.into(),
        ..fixture_request(&fixture_source(), make_flags)
    }
}

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn executor(name: &str, sshd: &Sshd, guest: Option<String>) -> Arc<dyn Executor> {
    fruix_executors::link();
    let mut config = serde_json::json!({
        "guest": guest.unwrap_or_else(|| sshd.guest()),
        "identity": sshd.identity(),
        "known_hosts": sshd.known_hosts(),
        "guest_state_dir": sshd.state_dir(),
        "connect_timeout_secs": 5,
    });
    if name == "guest-self-hosted" {
        config["guest_helper"] = env!("CARGO_BIN_EXE_fruix").into();
    }
    Registry::compiled().unwrap().create(name, config).unwrap()
}

async fn conformance(name: &str) {
    require_tool("bmake", "bmake");
    require_tool("cc", "gcc");
    let sshd = Sshd::trusted();
    let dir = tempfile::tempdir().unwrap();
    let unreachable = Some(format!("root@127.0.0.1:{}", closed_port()));
    Suite {
        success: Case::new(
            executor(name, &sshd, None),
            request("20260405T213441Z", &["-DNO_ROOT"]),
        ),
        build_failure: Case::new(
            executor(name, &sshd, None),
            request("20260405T213442Z", &["FAIL_STEP=buildworld"]),
        ),
        system_failure: Case::new(
            executor(name, &sshd, unreachable),
            request("20260405T213443Z", &[]),
        ),
        cancellation: Case::new(
            executor(name, &sshd, None),
            request("20260405T213444Z", &[]),
        ),
    }
    .run(dir.path())
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_initiated_passes_the_conformance_suite() {
    conformance("host-initiated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_self_hosted_passes_the_conformance_suite() {
    conformance("guest-self-hosted").await;
}
