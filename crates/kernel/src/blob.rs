//! Blob storage (product images, later archives) behind `object_store`: a local directory by
//! default (`<data_dir>/blobs`), another `file://` directory, or `s3://bucket[/prefix]` on any
//! S3-compatible store (CI runs it against a real S3 API, moto's server).

use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::sync::Arc;

#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob not found")]
    NotFound,
    #[error("invalid blob key")]
    InvalidKey,
    #[error("blob store failed: {0}")]
    Store(#[from] object_store::Error),
}

impl BlobStore {
    pub fn from_settings(settings: &crate::config::Settings) -> anyhow::Result<BlobStore> {
        use anyhow::Context;
        let url = settings.blob_url.as_deref().unwrap_or_default();
        if let Some(location) = url.strip_prefix("s3://") {
            return Self::s3(location, settings);
        }
        let dir = match url {
            "" => settings.data_dir.join("blobs"),
            url if url.starts_with("file://") => std::path::PathBuf::from(&url["file://".len()..]),
            url => anyhow::bail!("EMPORIUM_BLOB_URL={url} is not supported: use file:///dir or s3://bucket[/prefix]"),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating blob directory {}", dir.display()))?;
        let store = LocalFileSystem::new_with_prefix(&dir).context("opening the blob directory")?;
        Ok(BlobStore { store: Arc::new(store) })
    }

    fn s3(location: &str, settings: &crate::config::Settings) -> anyhow::Result<BlobStore> {
        use anyhow::Context;
        use object_store::aws::AmazonS3Builder;
        let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
        anyhow::ensure!(!bucket.is_empty(), "EMPORIUM_BLOB_URL=s3://… names no bucket");
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(endpoint) = &settings.blob_endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(region) = &settings.blob_region {
            builder = builder.with_region(region);
        }
        if let Some(key) = &settings.blob_access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &settings.blob_secret_access_key {
            builder = builder.with_secret_access_key(secret.expose());
        }
        let s3 = builder.build().context("configuring the S3 blob store")?;
        let store: Arc<dyn ObjectStore> = if prefix.trim_matches('/').is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(s3, prefix.trim_matches('/')))
        };
        Ok(BlobStore { store })
    }

    pub fn in_memory() -> BlobStore {
        BlobStore { store: Arc::new(object_store::memory::InMemory::new()) }
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BlobError> {
        let path = checked(key)?;
        self.store.put(&path, PutPayload::from(bytes)).await?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        let path = checked(key)?;
        match self.store.get(&path).await {
            Ok(result) => Ok(result.bytes().await?.to_vec()),
            Err(object_store::Error::NotFound { .. }) => Err(BlobError::NotFound),
            Err(err) => Err(err.into()),
        }
    }
}

/// Keys are ours (`products/<id>/<hash>.<ext>`), but requests name them too: only plain
/// segments of `[a-z0-9._-]`, never `..`.
fn checked(key: &str) -> Result<Path, BlobError> {
    let ok = !key.is_empty()
        && key.len() <= 300
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        });
    if ok { Path::parse(key).map_err(|_| BlobError::InvalidKey) } else { Err(BlobError::InvalidKey) }
}

/// The image formats we accept, recognised by their first bytes (the declared type is not trusted).
pub fn sniff_image(bytes: &[u8]) -> Option<(&'static str, &'static str)> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(("image/jpeg", "jpg"))
    } else if bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]) {
        Some(("image/png", "png"))
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(("image/webp", "webp"))
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(("image/gif", "gif"))
    } else {
        None
    }
}

pub fn content_type_for(key: &str) -> &'static str {
    match key.rsplit('.').next() {
        Some("jpg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape() {
        assert!(checked("products/abc/0123.png").is_ok());
        for bad in ["", "../etc/passwd", "a//b", "a/../b", "UPPER/x.png", "a b.png", "/abs"] {
            assert!(checked(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn images_are_recognised_by_content() {
        assert_eq!(sniff_image(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(("image/jpeg", "jpg")));
        assert_eq!(sniff_image(b"\x89PNG\r\n\x1a\n...."), Some(("image/png", "png")));
        assert_eq!(sniff_image(b"RIFF\0\0\0\0WEBPVP8 "), Some(("image/webp", "webp")));
        assert_eq!(sniff_image(b"<svg onload=alert(1)>"), None);
    }

    #[tokio::test]
    async fn blobs_round_trip() {
        let store = BlobStore::in_memory();
        store.put("products/p/1.png", b"data".to_vec()).await.unwrap();
        assert_eq!(store.get("products/p/1.png").await.unwrap(), b"data");
        assert!(matches!(store.get("products/p/2.png").await, Err(BlobError::NotFound)));
    }
}
