//! A private Azurite (the Azure Blob emulator, from `npm ci` at the workspace root) for a test
//! process, on a free loopback port (see [`crate::service`]).

use crate::service::{ReadyOn, Service, workspace_root};
use cairn_repo_format::ObjectStoreBackend;
use cairn_repo_format::backend::cloud;
use object_store::azure::MicrosoftAzureBuilder;

/// Azurite's well-known development account and key (public; documented by Microsoft).
pub const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running Azurite.
pub struct Azurite {
    service: Service,
    /// Its blob port on 127.0.0.1.
    pub port: u16,
}

impl Azurite {
    /// Starts Azurite with in-memory storage. Panics with what to do if it is not installed.
    pub fn start() -> Azurite {
        let bin = workspace_root().join("node_modules/.bin/azurite-blob");
        let service = Service::start(
            &bin,
            |port| {
                [
                    "--disableTelemetry",
                    "--inMemoryPersistence",
                    "--skipApiVersionCheck",
                    "--loose",
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    &port.to_string(),
                ]
                .map(String::from)
                .to_vec()
            },
            ReadyOn::Stdout,
            "successfully listens",
        );
        Azurite {
            port: service.port,
            service,
        }
    }

    /// The blob service URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.service.url()
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
