//! A test service (Azurite, moto) run as a child process on a free loopback port: started
//! with the arguments it needs, ready when it prints its "listening" line, its output then
//! drained so it never blocks, killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Which output stream carries the service's ready line.
pub enum ReadyOn {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A running service.
pub struct Service {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// The workspace root (services are installed below it by `scripts/test-services.sh`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

impl Service {
    /// Starts `bin` with `args(port)` on a port the kernel picked, and waits until a line of
    /// its `ready_on` output contains `ready`. Panics with what to do if `bin` is missing.
    pub fn start(
        bin: &Path,
        args: impl FnOnce(u16) -> Vec<String>,
        ready_on: ReadyOn,
        ready: &str,
    ) -> Service {
        assert!(
            bin.exists(),
            "{} is missing: run scripts/test-services.sh at the workspace root first",
            bin.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let (out, err) = match ready_on {
            ReadyOn::Stdout => (Stdio::piped(), Stdio::null()),
            ReadyOn::Stderr => (Stdio::null(), Stdio::piped()),
        };
        let mut child = Command::new(bin)
            .args(args(port))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stream: Box<dyn Read + Send> = match ready_on {
            ReadyOn::Stdout => Box::new(child.stdout.take().expect("piped")),
            ReadyOn::Stderr => Box::new(child.stderr.take().expect("piped")),
        };
        let mut lines = BufReader::new(stream).lines();
        let is_ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains(ready));
        assert!(
            is_ready,
            "{} exited before listening on port {port}: {:?}",
            bin.display(),
            child.try_wait()
        );
        std::thread::spawn(move || lines.for_each(drop));
        Service { child, port }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
