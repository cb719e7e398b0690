//! A private moto server (an S3-compatible store from PyPI, installed by
//! `scripts/test-services.sh` into `.test-services/python`) for a test process: started on a
//! free loopback port, ready when it says it is running, killed on drop. moto honours
//! `If-None-Match: *`, so create-only puts are tested for real.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use cairn_repo_format::ObjectStoreBackend;
use cairn_repo_format::backend::Multipart;
use object_store::aws::AmazonS3Builder;

/// A running moto server.
pub struct Moto {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

impl Moto {
    /// Starts moto. Panics with what to do if it is not installed.
    pub fn start() -> Moto {
        let bin = workspace_root().join(".test-services/python/bin/moto_server");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/test-services.sh at the workspace root first",
            bin.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        // Werkzeug announces "Running on http://127.0.0.1:PORT" on stderr once it listens.
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("Running on"));
        assert!(
            ready,
            "moto_server exited before listening on port {port}: {:?}",
            child.try_wait()
        );
        std::thread::spawn(move || lines.for_each(drop));
        Moto { child, port }
    }

    /// The endpoint, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket` (moto takes unsigned requests), as an operator would before `init`.
    pub fn create_bucket(&self, bucket: &str) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        write!(
            s,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .expect("send");
        let mut reply = String::new();
        s.read_to_string(&mut reply).expect("reply");
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "bucket {bucket}: {reply}"
        );
    }

    /// Environment for a `cairn` process, the way S3-compatible stores are configured.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", self.url().as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// A backend on `bucket`/`prefix`, configured explicitly, with multipart uploads from
    /// `multipart.threshold` bytes.
    pub fn backend(&self, bucket: &str, prefix: &str, multipart: Multipart) -> ObjectStoreBackend {
        let builder = AmazonS3Builder::new()
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .with_region("us-east-1")
            .with_endpoint(self.url())
            .with_allow_http(true);
        cairn_repo_format::backend::cloud::s3_with(builder, bucket, prefix)
            .expect("s3 backend")
            .with_multipart(multipart)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
