//! A private Azurite (the Azure Blob emulator, from `npm ci` at the workspace root) for a test
//! process: started on a free loopback port, ready when it accepts connections, killed on drop.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use cairn_repo_format::ObjectStoreBackend;
use cairn_repo_format::backend::cloud;
use object_store::azure::MicrosoftAzureBuilder;

/// Azurite's well-known development account and key (public; documented by Microsoft).
pub const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running Azurite.
pub struct Azurite {
    child: Child,
    /// Its blob port on 127.0.0.1.
    pub port: u16,
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

impl Azurite {
    /// Starts Azurite with in-memory storage. Panics with what to do if it is not installed.
    pub fn start() -> Azurite {
        let bin = workspace_root().join("node_modules/.bin/azurite-blob");
        assert!(
            bin.exists(),
            "{} is missing: run `npm ci` at the workspace root first",
            bin.display()
        );
        // Ask the kernel for a free port, then hand it to Azurite.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut child = Command::new(&bin)
            .args([
                "--disableTelemetry",
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--loose",
            ])
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        // Ready when it says it listens; its output is then drained so it never blocks.
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("successfully listens"));
        assert!(
            ready,
            "azurite exited before listening on port {port}: {:?}",
            child.try_wait()
        );
        std::thread::spawn(move || lines.for_each(drop));
        Azurite { child, port }
    }

    /// The blob service URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Environment for a `cairn` process to use this Azurite through object_store's emulator
    /// switch, as a user would.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR".into(), "true".into()),
            ("AZURITE_BLOB_STORAGE_URL".into(), self.url()),
        ]
    }

    /// A backend on `container`/`prefix`, configured explicitly (no process environment).
    pub fn backend(&self, container: &str, prefix: &str) -> ObjectStoreBackend {
        let builder = MicrosoftAzureBuilder::new()
            .with_account(ACCOUNT)
            .with_access_key(KEY)
            .with_endpoint(format!("{}/{ACCOUNT}", self.url()))
            .with_allow_http(true);
        cloud::azure_with(builder, container, prefix).expect("azure backend")
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
