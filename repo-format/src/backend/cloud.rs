//! Cloud object stores: Azure Blob, S3 and GCS through `object_store`'s builders, configured
//! from the environment the way each cloud's users expect (`AZURE_STORAGE_*`, `AWS_*`,
//! `GOOGLE_*`; object_store's own variable names, `AZURE_STORAGE_USE_EMULATOR=true` included),
//! and the one thing object_store cannot do: create an Azure container. That request is signed
//! with object_store's own Azure authorizer, so every credential kind it supports works.

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::azure::{AzureAuthorizer, AzureConfigKey, MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::client::{HttpRequest, HttpRequestBody};
use object_store::gcp::GoogleCloudStorageBuilder;

use super::{BackendError, Multipart, ObjectStoreBackend};

/// Where an Azure container lives and how to authorize requests to it.
pub(crate) struct AzureContainer {
    store: Arc<MicrosoftAzure>,
    account: String,
    /// `https://account.blob.core.windows.net/container` (or the emulator's equivalent).
    url: String,
    name: String,
}

fn config_error(location: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Other {
        path: location.to_string(),
        message: format!("configuration: {e}"),
    }
}

/// object_store's own retries are turned off: [`super::Retry`] retries every operation
/// (including a body cut short mid-read, which a request-level retry does not see) under one
/// documented policy, instead of two nested ones multiplying each other's delays.
fn single_attempt() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 0,
        ..Default::default()
    }
}

/// An Azure Blob repository in `container` under `prefix`, configured from the environment.
pub fn azure(container: &str, prefix: &str) -> Result<ObjectStoreBackend, BackendError> {
    azure_with(
        MicrosoftAzureBuilder::from_env().with_retry(single_attempt()),
        container,
        prefix,
    )
}

/// An Azure Blob repository configured by `builder` (account, credentials, endpoint).
pub fn azure_with(
    builder: MicrosoftAzureBuilder,
    container: &str,
    prefix: &str,
) -> Result<ObjectStoreBackend, BackendError> {
    let location = format!("azure://{container}/{prefix}")
        .trim_end_matches('/')
        .to_string();
    let builder = builder.with_container_name(container);
    let emulator = builder
        .get_config_value(&AzureConfigKey::UseEmulator)
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on"));
    let account = builder
        .get_config_value(&AzureConfigKey::AccountName)
        .or_else(|| emulator.then(|| "devstoreaccount1".to_string()))
        .ok_or_else(|| {
            config_error(&location, "no storage account: set AZURE_STORAGE_ACCOUNT_NAME (or AZURE_STORAGE_USE_EMULATOR=true for Azurite)")
        })?;
    let base = if emulator {
        let root = std::env::var("AZURITE_BLOB_STORAGE_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:10000".into());
        format!("{}/{account}", root.trim_end_matches('/'))
    } else {
        builder
            .get_config_value(&AzureConfigKey::Endpoint)
            .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"))
            .trim_end_matches('/')
            .to_string()
    };
    let store = Arc::new(builder.build().map_err(|e| config_error(&location, e))?);
    let info = AzureContainer {
        store: store.clone(),
        account,
        url: format!("{base}/{container}"),
        name: container.into(),
    };
    let mut b = ObjectStoreBackend::new(store, prefix, location.clone())
        .map_err(|e| config_error(&location, e))?
        .with_multipart(Multipart::default());
    b.azure = Some(info);
    Ok(b)
}

/// An S3 (or S3-compatible: `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`) repository.
pub fn s3(bucket: &str, prefix: &str) -> Result<ObjectStoreBackend, BackendError> {
    s3_with(AmazonS3Builder::from_env(), bucket, prefix)
}

/// An S3 repository configured by `builder` (credentials, region, endpoint).
pub fn s3_with(
    builder: AmazonS3Builder,
    bucket: &str,
    prefix: &str,
) -> Result<ObjectStoreBackend, BackendError> {
    let built = builder
        .with_bucket_name(bucket)
        .with_retry(single_attempt())
        .build();
    wrap(built, prefix, format!("s3://{bucket}/{prefix}"))
}

/// A Google Cloud Storage repository.
pub fn gcs(bucket: &str, prefix: &str) -> Result<ObjectStoreBackend, BackendError> {
    let built = GoogleCloudStorageBuilder::from_env()
        .with_retry(single_attempt())
        .with_bucket_name(bucket)
        .build();
    wrap(built, prefix, format!("gs://{bucket}/{prefix}"))
}

/// Turns a built store (or its configuration error) into a backend named `location`.
fn wrap<S: object_store::ObjectStore>(
    built: object_store::Result<S>,
    prefix: &str,
    location: String,
) -> Result<ObjectStoreBackend, BackendError> {
    let location = location.trim_end_matches('/').to_string();
    let store = built.map_err(|e| config_error(&location, e))?;
    let mut b = ObjectStoreBackend::new(Arc::new(store), prefix, location.clone())
        .map_err(|e| config_error(&location, e))?
        .with_multipart(Multipart::default());
    b.is_bucket = true;
    Ok(b)
}

impl AzureContainer {
    /// Sends one signed request to the container URL (`?restype=container`) and returns the
    /// HTTP status.
    async fn request(&self, method: http::Method) -> Result<u16, BackendError> {
        let err = |m: String| BackendError::Other {
            path: format!("container {}", self.name),
            message: m,
        };
        let cred = self
            .store
            .credentials()
            .get_credential()
            .await
            .map_err(|e| err(e.to_string()))?;
        let mut req: HttpRequest = http::Request::builder()
            .method(method)
            .uri(format!("{}?restype=container", self.url))
            .body(HttpRequestBody::empty())
            .map_err(|e| err(e.to_string()))?;
        AzureAuthorizer::new(&cred, &self.account)
            .try_authorize(&mut req)
            .map_err(|e| err(e.to_string()))?;
        let client = reqwest::Client::new();
        let mut out = client.request(req.method().clone(), req.uri().to_string());
        for (k, v) in req.headers() {
            out = out.header(k, v);
        }
        let resp = out
            .send()
            .await
            .map_err(|e| err(format!("request failed: {e}")))?;
        Ok(resp.status().as_u16())
    }
}

impl ObjectStoreBackend {
    /// For Azure: creates the container if it does not exist. Returns `Some(true)` if it was
    /// created, `Some(false)` if it was there, `None` for other stores.
    pub fn create_container(&self) -> Result<Option<bool>, BackendError> {
        let Some(az) = &self.azure else {
            return Ok(None);
        };
        let status = super::io::block_on(az.request(http::Method::PUT))?;
        match status {
            201 => Ok(Some(true)),
            409 => Ok(Some(false)),
            403 => Err(BackendError::Other {
                path: format!("container {}", az.name),
                message: "403 forbidden: the credentials may not create containers; create it in the portal or grant the role".into(),
            }),
            s => Err(BackendError::Other { path: format!("container {}", az.name), message: format!("create failed with HTTP {s}") }),
        }
    }

    /// For Azure: whether the container exists (`None` for other stores).
    pub fn container_exists(&self) -> Result<Option<bool>, BackendError> {
        let Some(az) = &self.azure else {
            return Ok(None);
        };
        match super::io::block_on(az.request(http::Method::GET))? {
            200 => Ok(Some(true)),
            404 => Ok(Some(false)),
            s => Err(BackendError::Other {
                path: format!("container {}", az.name),
                message: format!("HTTP {s}"),
            }),
        }
    }

    /// For S3 and GCS: whether the bucket is missing, judged by listing the repository's
    /// prefix (`None` for Azure, which has [`Self::container_exists`], and local stores).
    pub fn bucket_missing(&self) -> Result<Option<bool>, BackendError> {
        if self.azure.is_some() || !self.is_bucket {
            return Ok(None);
        }
        let prefix = self.full("");
        let first = super::io::block_on(async {
            use futures::StreamExt;
            self.store.list(Some(&prefix)).next().await
        });
        Ok(Some(match first {
            None | Some(Ok(_)) => false,
            Some(Err(object_store::Error::NotFound { .. })) => true,
            Some(Err(e)) if e.to_string().contains("NoSuchBucket") => true,
            Some(Err(e)) => {
                return Err(BackendError::Other {
                    path: self.location.clone(),
                    message: e.to_string(),
                });
            }
        }))
    }

    /// The Azure container's name, if this is Azure.
    pub fn container_name(&self) -> Option<&str> {
        self.azure.as_ref().map(|a| a.name.as_str())
    }
}
