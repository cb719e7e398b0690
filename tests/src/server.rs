//! A real `cairn server` process for tests: a test CA and server certificate made with
//! rcgen, a tokens file with one token per role, a receipt key, and the server started on
//! ports the kernel picks (read back from its JSON start line), ready once `/readyz` says so.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

/// Tokens of the test tokens file.
pub const READ: &str = "read-token-0123456789";
/// Append, root repository.
pub const APPEND: &str = "append-token-0123456789";
/// Admin, root repository.
pub const ADMIN: &str = "admin-token-0123456789";
/// Append, limited to `ns1`.
pub const NS1_APPEND: &str = "ns1-append-token-0123456789";
/// Admin, limited to `ns1`.
pub const NS1_ADMIN: &str = "ns1-admin-token-0123456789";
/// A second append token (another node).
pub const APPEND2: &str = "append2-token-0123456789";
/// Read, limited to `ns1` (a second cluster's).
pub const NS1_READ: &str = "ns1-read-token-0123456789";

/// The tokens file every test server starts with.
pub fn tokens_file_text() -> String {
    format!(
        "# test tokens\n{READ} read\n{APPEND} append\n{ADMIN} admin\n{NS1_APPEND} append ns1\n{NS1_ADMIN} admin /ns1/ # comment\n{APPEND2} append\n{NS1_READ} read ns1\n"
    )
}

/// A CA and a server certificate for 127.0.0.1 and localhost, as PEM.
pub struct TestPki {
    /// The CA certificate.
    pub ca_pem: String,
    /// The server certificate.
    pub cert_pem: String,
    /// The server key.
    pub key_pem: String,
}

impl TestPki {
    /// A fresh CA named `name` and a server certificate it signed.
    pub fn new(name: &str) -> TestPki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, name);
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        params
            .distinguished_name
            .push(DnType::CommonName, "cairn test server");
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        TestPki {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A running server and the files it was started with.
pub struct Server {
    child: Option<Child>,
    /// `https://127.0.0.1:PORT` (or `http://`).
    pub base: String,
    /// The metrics address.
    pub metrics: Option<SocketAddr>,
    /// The directory holding the certificate, key, CA, tokens and receipt key.
    pub dir: PathBuf,
    /// The storage directory.
    pub storage: PathBuf,
    /// What the server wrote to stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// How to start a server.
#[derive(Clone, Default)]
pub struct Options {
    /// Extra flags.
    pub extra: Vec<String>,
    /// Serve plain HTTP.
    pub plain: bool,
    /// Listen on this port (0: the kernel picks).
    pub port: u16,
    /// Storage other than the `storage` directory (`azure://container`).
    pub storage_url: Option<String>,
    /// Environment for the server process (storage credentials).
    pub env: Vec<(String, String)>,
}

impl Server {
    /// Starts a server in front of `storage`, with its files in `dir` (the PKI, tokens and
    /// key files are written unless they exist already, so a restart keeps them).
    pub fn start(storage: &Path, dir: &Path, opts: Options) -> Server {
        std::fs::create_dir_all(dir).expect("server dir");
        let tokens = dir.join("tokens");
        if !tokens.exists() {
            std::fs::write(&tokens, tokens_file_text()).expect("tokens");
        }
        let key = dir.join("receipt.key");
        if !key.exists() {
            std::fs::write(&key, "test receipt key, 32 bytes or more, really").expect("key");
        }
        if !opts.plain && !dir.join("tls.crt").exists() {
            let pki = TestPki::new("cairn test CA");
            std::fs::write(dir.join("ca.pem"), &pki.ca_pem).expect("ca");
            std::fs::write(dir.join("tls.crt"), &pki.cert_pem).expect("cert");
            std::fs::write(dir.join("tls.key"), &pki.key_pem).expect("key");
        }
        let mut args: Vec<String> = vec![
            "server".into(),
            "--repo".into(),
            opts.storage_url
                .clone()
                .unwrap_or_else(|| storage.display().to_string()),
            "--listen".into(),
            format!("127.0.0.1:{}", opts.port),
            "--tokens-file".into(),
            tokens.display().to_string(),
            "--receipt-key-file".into(),
            key.display().to_string(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
        ];
        if !opts.plain {
            args.extend([
                "--tls-cert".into(),
                dir.join("tls.crt").display().to_string(),
                "--tls-key".into(),
                dir.join("tls.key").display().to_string(),
            ]);
        }
        args.extend(opts.extra.iter().cloned());
        Server::spawn(storage, dir, args, opts.env, !opts.plain)
    }

    fn spawn(
        storage: &Path,
        dir: &Path,
        args: Vec<String>,
        env: Vec<(String, String)>,
        tls: bool,
    ) -> Server {
        let mut child = Command::new(crate::cairn_bin())
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cairn server");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("cairn server started") {
                        let _ = tx.send(line.clone());
                    }
                    log.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        let started = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "cairn server did not start:\n{}",
                    log.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
                );
            }
        };
        let v: serde_json::Value = serde_json::from_str(&started).expect("JSON start line");
        let fields = &v["fields"];
        let listen = fields["listen"].as_str().expect("listen").to_string();
        let metrics = fields["metrics"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().expect("metrics addr"));
        let scheme = if tls { "https" } else { "http" };
        let s = Server {
            child: Some(child),
            base: format!("{scheme}://{listen}"),
            metrics,
            dir: dir.to_path_buf(),
            storage: storage.to_path_buf(),
            log,
            args,
            env,
        };
        s.wait_ready();
        s
    }

    /// Waits until `/readyz` on the metrics port answers 200 (the storage was counted).
    pub fn wait_ready(&self) {
        let Some(m) = self.metrics else { return };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, _)) = plain_get(m, "/readyz") {
                return;
            }
            assert!(Instant::now() < deadline, "server never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The CA file clients trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server's own port.
    pub fn port(&self) -> u16 {
        self.base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    /// `rest:` location of the repository at `prefix`.
    pub fn location(&self, prefix: &str) -> String {
        format!("rest:{}/{}", self.base, prefix.trim_matches('/'))
    }

    /// Sends SIGKILL and waits.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        c.wait().ok()
    }

    /// Starts the same server again (same flags, same port).
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port();
        let mut args = self.args.clone();
        if let Some(i) = args.iter().position(|a| a == "--listen") {
            args[i + 1] = format!("127.0.0.1:{port}");
        }
        let tls = self.base.starts_with("https");
        *self = Server::spawn(
            &self.storage.clone(),
            &self.dir.clone(),
            args,
            self.env.clone(),
            tls,
        );
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP/1.1 GET on `addr`: the status and body, or `None` if it failed.
pub fn plain_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
    Some((status, body))
}
