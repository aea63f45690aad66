//! Test support shared by the unit tests and the integration tests: a scratch PostgreSQL
//! database per test. Not part of Sluice's interface.
//!
//! The server is `SLUICE_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`,
//! the machine's local PostgreSQL); each [`ScratchPostgres`] creates its own database there
//! and drops it when dropped, so tests running side by side never see each other's rows.

use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The PostgreSQL server the tests use.
pub fn postgres_admin_url() -> String {
    std::env::var("SLUICE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A database of its own for one test, dropped with this value.
#[derive(Debug)]
pub struct ScratchPostgres {
    name: String,
    url: String,
}

impl ScratchPostgres {
    /// Creates an empty database. Panics with what to do when PostgreSQL does not answer.
    pub async fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let admin = postgres_admin_url();
        let name = format!(
            "sluice_test_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "these tests need PostgreSQL at {admin} (set SLUICE_TEST_POSTGRES_URL, or \
                 start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main \
                 start): {e}"
            )
        });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        let _ = conn.close().await;
        let url = match admin.rfind('/') {
            Some(i) if admin[..i].ends_with(|c: char| c != '/') => {
                let query = admin.find('?').map(|q| &admin[q..]).unwrap_or("");
                format!("{}/{name}{query}", &admin[..i])
            }
            _ => panic!("SLUICE_TEST_POSTGRES_URL must name a database: {admin}"),
        };
        Self { name, url }
    }

    /// The database's URL, for `storage.url`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for ScratchPostgres {
    fn drop(&mut self) {
        let admin = postgres_admin_url();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop may run inside a runtime, which cannot block on itself: use a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
    }
}
