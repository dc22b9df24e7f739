//! Snapshot copies in an S3-compatible object store (AWS S3, MinIO, Ceph, moto…).
//!
//! Layout: `<prefix>/<id>/trades.duckdb` then `<prefix>/<id>/manifest.json`. The
//! manifest is uploaded last and deleted first, so a snapshot whose manifest is listed
//! is complete. Downloads are checked against the manifest's size and SHA-256 by
//! [`crate::durability::snapshot::restore`] before anything uses them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::io::AsyncWriteExt;

use crate::config::S3Config;
use crate::error::{Cause, Error, Result};
use tradestore_api::snapshot::{DB_FILE, MANIFEST, Manifest};

/// A bucket (and prefix) holding snapshots.
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
}

impl Remote {
    /// Connects lazily to the bucket in `cfg`; credentials come from the standard
    /// `AWS_*` environment variables.
    pub fn new(cfg: &S3Config) -> Result<Self> {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&cfg.bucket).with_region(&cfg.region);
        if let Some(endpoint) = &cfg.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let store = builder.build().map_err(|e| Error::Config(format!("snapshots.s3: {e}")))?;
        let prefix = ObjectPath::from(cfg.prefix.trim_matches('/'));
        let url = format!("s3://{}/{}", cfg.bucket, prefix);
        Ok(Remote { store: Arc::new(store), prefix, url })
    }

    /// `s3://bucket/prefix`, for logs and status.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn object(&self, id: &str, file: &str) -> ObjectPath {
        self.prefix.clone().join(id).join(file)
    }

    /// Uploads the snapshot in `dir` (the database copy, then its manifest).
    pub async fn upload(&self, dir: &Path, m: &Manifest) -> Result<()> {
        let mut file = tokio::fs::File::open(dir.join(DB_FILE)).await?;
        let mut out = BufWriter::new(self.store.clone(), self.object(&m.id, DB_FILE));
        if let Err(e) = tokio::io::copy(&mut file, &mut out).await {
            let _ = out.abort().await;
            return Err(unavailable(e));
        }
        // A failed completion leaves at most an unlisted object (no manifest is written).
        out.shutdown().await.map_err(unavailable)?;
        let manifest = serde_json::to_vec_pretty(m).expect("manifest serializes");
        self.store.put(&self.object(&m.id, MANIFEST), PutPayload::from(manifest)).await.map_err(unavailable)?;
        tracing::info!(id = m.id, to = self.url, bytes = m.size_bytes, "snapshot uploaded");
        Ok(())
    }

    /// Manifests of complete snapshots in the bucket, oldest first.
    pub async fn list(&self) -> Result<Vec<Manifest>> {
        let listing = self.store.list_with_delimiter(Some(&self.prefix)).await.map_err(unavailable)?;
        let mut out = Vec::new();
        for dir in listing.common_prefixes {
            let Some(id) = dir.filename() else { continue };
            match self.store.get(&self.object(id, MANIFEST)).await {
                Ok(got) => {
                    let raw = got.bytes().await.map_err(unavailable)?;
                    let m: Manifest = serde_json::from_slice(&raw)
                        .map_err(|e| Error::Snapshot(format!("{}/{id}: bad manifest: {e}", self.url)))?;
                    out.push(m);
                }
                Err(object_store::Error::NotFound { .. }) => {} // upload in progress or interrupted
                Err(e) => return Err(unavailable(e)),
            }
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Downloads snapshot `id` into `<into>/<id>/` and returns that directory (the
    /// caller restores it with [`snapshot::restore`], which verifies it first).
    pub async fn download(&self, id: &str, into: &Path) -> Result<PathBuf> {
        let partial = into.join(format!("{id}.partial"));
        let _ = tokio::fs::remove_dir_all(&partial).await;
        tokio::fs::create_dir_all(&partial).await?;
        let fetched = async {
            for name in [DB_FILE, MANIFEST] {
                let got = self.store.get(&self.object(id, name)).await.map_err(|e| match e {
                    object_store::Error::NotFound { .. } => Error::NotFound(format!("snapshot {id} in {}", self.url)),
                    e => unavailable(e),
                })?;
                let mut file = tokio::fs::File::create(partial.join(name)).await?;
                let mut chunks = got.into_stream();
                while let Some(chunk) = chunks.next().await {
                    file.write_all(&chunk.map_err(unavailable)?).await?;
                }
                file.sync_all().await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = fetched {
            let _ = tokio::fs::remove_dir_all(&partial).await;
            return Err(e);
        }
        let dir = into.join(id);
        let _ = tokio::fs::remove_dir_all(&dir).await;
        tokio::fs::rename(&partial, &dir).await?;
        tracing::info!(id, from = self.url, "snapshot downloaded");
        Ok(dir)
    }

    /// Deletes snapshot `id` (manifest first, so it stops being listed at once).
    pub async fn delete(&self, id: &str) -> Result<()> {
        for name in [MANIFEST, DB_FILE] {
            match self.store.delete(&self.object(id, name)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(())
    }
}

fn unavailable(e: impl Into<Cause>) -> Error {
    Error::dependency("object store", e)
}
