//! Processes a test starts: the manager's own binary, a MongoDB-wire server
//! of its own to stop and kill, and free ports for them.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Corp, Received};

/// A port nothing listens on now (for a process the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An address where nothing listens any more: a stopped container.
pub fn vanished_endpoint() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// The sync tokens in what a puppet received, with how often each came.
pub fn delivered_tokens(received: &[Received], corp: &Corp) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for token in corp.tokens_in(received) {
        *counts.entry(token).or_insert(0) += 1;
    }
    counts
}

/// The manager binary as a child process.
pub struct ManagerProcess {
    child: Child,
}

impl ManagerProcess {
    pub fn start(port: u16, data_dir: &std::path::Path, mongo_uri: Option<&str>) -> Self {
        Self::start_with(port, data_dir, mongo_uri, &[])
    }

    pub fn start_with(
        port: u16,
        data_dir: &std::path::Path,
        mongo_uri: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Self {
        Self::start_within(&[], port, data_dir, mongo_uri, extra)
    }

    /// Start the binary through `wrapper` (a command that ends by running
    /// its last argument, the binary's path), e.g. in a namespace of its own.
    pub fn start_within(
        wrapper: &[&str],
        port: u16,
        data_dir: &std::path::Path,
        mongo_uri: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Self {
        let binary = env!("CARGO_BIN_EXE_wxkf-manager");
        let mut cmd = match wrapper.split_first() {
            None => Command::new(binary),
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(binary);
                cmd
            }
        };
        cmd.env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("DATA_DIR", data_dir)
            .env("RUST_LOG", "warn")
            .env("COALESCE_WAKEUPS", "false")
            .env("RETRY_BASE_MS", "100")
            .env("RETRY_CAP_MS", "500")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(uri) = mongo_uri {
            cmd.env("MONGO_URI", uri);
        }
        cmd.envs(extra.iter().copied());
        Self {
            child: cmd.spawn().expect("start the manager binary"),
        }
    }

    pub async fn wait_healthy(&self, base: &str) {
        for _ in 0..200 {
            if let Ok(r) = reqwest::get(format!("{base}/healthz")).await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("manager did not become healthy");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A SecantusDB server of our own, to kill and restart.
pub struct OwnMongo {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl OwnMongo {
    /// Start it on `port` over `dir` and wait until it accepts connections.
    pub async fn start(port: u16, dir: tempfile::TempDir) -> Self {
        let bin =
            std::env::var("WXKF_SECANTUS_BIN").expect("WXKF_SECANTUS_BIN (set by scripts/test)");
        let child = Command::new(bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--storage-path",
            ])
            .arg(dir.path())
            .args(["--sync-on-commit", "--log-level", "WARNING"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start SecantusDB");
        let db = Self { child, port, dir };
        db.wait_listening().await;
        db
    }

    async fn wait_listening(&self) {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("test MongoDB did not start");
    }

    /// Send a signal (`STOP`, `CONT`) to the server process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{name}");
    }

    pub fn kill(mut self) -> (u16, tempfile::TempDir) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.port, self.dir)
    }
}

/// The CLI's `store copy` against the embedded store in `data_dir`, with
/// `SECRETS_KEY` the given bytes; it must succeed.
pub fn store_copy_sealed(data_dir: &std::path::Path, secrets_key: [u8; 32], args: &[&str]) {
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, secrets_key);
    let out = Command::new(env!("CARGO_BIN_EXE_wxkf-manager"))
        .env_clear()
        .env("DATA_DIR", data_dir)
        .env("SECRETS_KEY", key)
        .args(["store", "copy"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stop a manager started with piped output by SIGTERM (a graceful stop
/// flushes the log writers) and give back everything it wrote; it must exit 0.
pub fn stop_and_read_logs(mut child: std::process::Child) -> String {
    use std::io::Read;
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let mut logs = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut logs).unwrap();
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut logs).unwrap();
    }
    assert!(child.wait().unwrap().success(), "exits 0 on SIGTERM");
    logs
}
