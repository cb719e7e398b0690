//! A private moto server (an S3-compatible store from PyPI, installed by
//! `scripts/test-services.sh` into `.test-services/python`) for a test process, on a free
//! loopback port (see [`crate::service`]). moto honours
//! `If-None-Match: *`, so create-only puts are tested for real.

use std::io::{Read, Write};
use std::net::TcpStream;

use cairn_repo_format::ObjectStoreBackend;
use cairn_repo_format::backend::Multipart;
use object_store::aws::AmazonS3Builder;

use crate::service::{ReadyOn, Service, workspace_root};

/// A running moto server.
pub struct Moto {
    service: Service,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Moto {
    /// Starts moto. Panics with what to do if it is not installed.
    pub fn start() -> Moto {
        let bin = workspace_root().join(".test-services/python/bin/moto_server");
        // Werkzeug announces "Running on http://127.0.0.1:PORT" on stderr once it listens.
        let service = Service::start(
            &bin,
            |port| {
                vec![
                    "-H".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    port.to_string(),
                ]
            },
            ReadyOn::Stderr,
            "Running on",
        );
        Moto {
            port: service.port,
            service,
        }
    }

    /// The endpoint, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.service.url()
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
