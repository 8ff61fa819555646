//! A PostgreSQL server of a test's own (tests/durable.rs, tests/record.rs).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::free_port;

/// A PostgreSQL server of the test's own: `initdb` in a temp dir, `postgres` on a free port
/// with its socket in that dir; stopped (SIGKILL) when dropped.
pub struct Postgres {
    child: std::process::Child,
    port: u16,
}

impl Postgres {
    fn bin(name: &str) -> PathBuf {
        let debian = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .flatten()
                    .map(|v| v.path().join("bin").join(name))
                    .filter(|p| p.exists())
                    .max()
            });
        debian.unwrap_or_else(|| PathBuf::from(name))
    }

    pub async fn start() -> Postgres {
        let dir =
            std::env::temp_dir().join(format!("convene-pg-{}-{}", std::process::id(), free_port()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let data = dir.join("pgdata");
        // initdb refuses to run as root; the test machine's user may be root (then as `postgres`).
        let as_postgres = nix_is_root();
        let run = |bin: PathBuf, args: Vec<String>| -> std::process::Command {
            if as_postgres {
                // setpriv execs: the child's pid is postgres's own, for the stop below.
                let mut c = std::process::Command::new("setpriv");
                c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
                    .arg(bin)
                    .args(args);
                c
            } else {
                let mut c = std::process::Command::new(bin);
                c.args(args);
                c
            }
        };
        if as_postgres {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown runs");
            assert!(status.success());
        }
        let data_s = data.display().to_string();
        let out = run(
            Postgres::bin("initdb"),
            vec![
                "-D".into(),
                data_s.clone(),
                "-U".into(),
                "convene".into(),
                "-A".into(),
                "trust".into(),
            ],
        )
        .output()
        .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let child = run(
            Postgres::bin("postgres"),
            vec![
                "-D".into(),
                data_s,
                "-p".into(),
                port.to_string(),
                "-k".into(),
                dir.display().to_string(),
                "-h".into(),
                "127.0.0.1".into(),
                "-c".into(),
                "fsync=on".into(),
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("postgres starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "postgres did not listen within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Postgres { child, port }
    }

    pub fn url(&self) -> String {
        format!("postgres://convene@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown (it ends its backends too).
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn nix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
