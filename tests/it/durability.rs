//! A full disk under the real binary: the SQLite file cannot grow (`RLIMIT_FSIZE` on the
//! process, so its WAL writes fail at `COMMIT` as on a full filesystem). Every delivery that is
//! not durably committed must get a 5xx, `/readyz` must fail meanwhile, and once room returns
//! everything works again and no acknowledged delivery is lost, also across a restart.

use std::os::unix::process::CommandExt;
use std::time::Duration;

use reqwest::StatusCode;
use sluice::store::IngestOutcome;

use crate::util::{self, FakeSlack, Process, Scratch};

/// Files the process writes may not grow past this many bytes: room for the migrations and a
/// few dozen deliveries in the WAL.
const FILE_LIMIT: u64 = 1 << 20;

/// Sets the soft `RLIMIT_FSIZE` of process `pid`.
fn set_file_limit(pid: u32, bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit with a valid pid and a pointer to a live rlimit; the old value is not read.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

async fn readyz(process: &Process) -> StatusCode {
    reqwest::get(process.url("/readyz")).await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gets_503s_not_202s_and_loses_nothing_acknowledged() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let text = util::config_text(&slack, &scratch.db(), "");
    let process = Process::start_with(&text, &scratch, |command| {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                // A write past the limit then fails with EFBIG instead of killing the process.
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            });
        }
    })
    .await;
    set_file_limit(process.pid(), FILE_LIMIT);

    let mut acked = Vec::new();
    let mut n = 0;
    let first_refusal = loop {
        assert!(n < 5000, "the store never filled up");
        let body = util::event_alert("4242", &util::event_id(n), "checkout", "production");
        let (status, answer) = process.deliver("event_alert", &body).await;
        if status == StatusCode::ACCEPTED {
            assert_eq!(answer["counted"], true, "{answer}");
            acked.push(n);
        } else {
            break status;
        }
        n += 1;
    };
    assert_eq!(first_refusal, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!acked.is_empty());

    // The disk is still full: every delivery is refused, and the service is not ready.
    for n in n + 1..n + 31 {
        let body = util::event_alert("4242", &util::event_id(n), "checkout", "production");
        let (status, answer) = process.deliver("event_alert", &body).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "delivery {n} acknowledged on a full disk: {answer}"
        );
    }
    assert_eq!(readyz(&process).await, StatusCode::SERVICE_UNAVAILABLE);

    // Room returns: ready again without a restart, and deliveries commit.
    set_file_limit(process.pid(), libc::RLIM_INFINITY);
    util::eventually(
        Duration::from_secs(10),
        "ready after room returned",
        || async { (readyz(&process).await == StatusCode::OK).then_some(()) },
    )
    .await;
    for n in 10_000..10_010 {
        let body = util::event_alert("4242", &util::event_id(n), "checkout", "production");
        let (status, answer) = process.deliver("event_alert", &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        acked.push(n);
    }

    // A graceful stop and a look at what the file holds.
    process.signal("TERM");
    assert_eq!(process.wait_exit(Duration::from_secs(20)).await, Some(0));
    let store = scratch.store().await;
    for &n in &acked {
        let body = util::event_alert("4242", &util::event_id(n), "checkout", "production");
        let delivery = sluice::store::Delivery {
            body_sha256: sha256(&body),
            resource: "event_alert".into(),
            request_id: None,
            received_at_ms: 0,
            alert: None,
            targets: vec![],
        };
        assert_eq!(
            store.ingest(delivery).await.unwrap(),
            IngestOutcome::DuplicateDelivery,
            "acknowledged delivery {n} is not in the store"
        );
    }
    let now = sluice::clock::Clock::system().now_ms();
    let stats = store.issue_stats("4242", now).await.unwrap();
    assert_eq!(
        stats.week(),
        acked.len() as u64,
        "every acknowledged occurrence counted once"
    );
}

fn sha256(body: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(body).into()
}
