//! `http://` and `https://` module URLs, fetched with reqwest (rustls; the system's roots plus
//! any extra CA given), capped at the module size limit.

use std::time::Duration;

use futures_util::StreamExt as _;

use crate::error::PullError;
use crate::oci::error_chain;
use crate::MAX_MODULE_BYTES;

/// A client for module URLs.
#[derive(Debug, Clone)]
pub struct HttpFetcher {
    client: reqwest::Client,
}

impl HttpFetcher {
    /// A client trusting the system's roots and `extra_roots_pem` (PEM certificates), with
    /// each request bounded by `timeout`.
    pub fn new(extra_roots_pem: &[Vec<u8>], timeout: Duration) -> Result<HttpFetcher, PullError> {
        crate::ensure_crypto_provider();
        let mut certs = Vec::new();
        for pem in extra_roots_pem {
            let parsed =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| PullError::CaFile {
                    path: "(extra roots)".into(),
                    reason: e.to_string(),
                })?;
            certs.extend(parsed);
        }
        let client = reqwest::Client::builder()
            .tls_certs_merge(certs)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("meshgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PullError::Registry {
                url: "(http client)".to_owned(),
                message: error_chain(&e),
                transient: false,
            })?;
        Ok(HttpFetcher { client })
    }

    /// GETs `url` and returns the body (at most [`MAX_MODULE_BYTES`]).
    pub async fn get(&self, url: &str) -> Result<Vec<u8>, PullError> {
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| PullError::Registry {
                url: url.to_owned(),
                message: error_chain(&e),
                transient: true,
            })?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(PullError::Registry {
                url: url.to_owned(),
                message: format!("status {status}: {}", body.trim()),
                transient: status.is_server_error() || status.as_u16() == 429,
            });
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_MODULE_BYTES as u64)
        {
            return Err(PullError::TooLarge {
                what: url.to_owned(),
                limit: MAX_MODULE_BYTES,
            });
        }
        let mut out = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| PullError::Registry {
                url: url.to_owned(),
                message: error_chain(&e),
                transient: true,
            })?;
            if out.len() + chunk.len() > MAX_MODULE_BYTES {
                return Err(PullError::TooLarge {
                    what: url.to_owned(),
                    limit: MAX_MODULE_BYTES,
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}
