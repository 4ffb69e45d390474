//! The one place S3 settings are read: `S3_ENDPOINT`, `S3_REGION`,
//! `S3_ACCESS_KEY`, `S3_SECRET_KEY` (standard `AWS_*` variables work too), as
//! object_store configuration keys, for the landed dir and the Delta tables alike.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use object_store::ClientOptions;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use serde::Deserialize;

/// object_store's S3 options from the environment. With `S3_ENDPOINT` set
/// (MinIO, moto, Ceph…), path-style requests and, for `http://`, plain HTTP.
pub fn storage_options() -> HashMap<String, String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut options = HashMap::new();
    options.insert(
        "aws_region".to_owned(),
        env("S3_REGION")
            .or_else(|| env("AWS_REGION"))
            .unwrap_or_else(|| "us-east-1".into()),
    );
    if let Some(endpoint) = env("S3_ENDPOINT") {
        options.insert(
            "aws_allow_http".to_owned(),
            endpoint.starts_with("http://").to_string(),
        );
        options.insert(
            "aws_virtual_hosted_style_request".to_owned(),
            "false".into(),
        );
        options.insert("aws_endpoint".to_owned(), endpoint);
    }
    if let Some(key) = env("S3_ACCESS_KEY") {
        options.insert("aws_access_key_id".to_owned(), key);
    }
    if let Some(secret) = env("S3_SECRET_KEY") {
        options.insert("aws_secret_access_key".to_owned(), secret);
    }
    options
}

/// A ListObjectsV2 listing done by hand, for the one case object_store cannot
/// list: a key with an empty, `.` or `..` segment (`landed/../x.csv`,
/// `landed//x.csv`) fails its whole listing page, so one odd key would hide every
/// file beside it. Signed with object_store's own SigV4 authorizer and
/// credentials; only used after object_store's listing refused a key.
pub struct RawLister {
    store: Arc<AmazonS3>,
    client: HttpClient,
    /// `https://s3.region.amazonaws.com/bucket`, `http://endpoint/bucket`, or the
    /// virtual-hosted bucket URL, as object_store itself would use.
    bucket_url: String,
    region: String,
}

/// One listed key, as S3 spells it.
#[derive(Debug, Clone)]
pub struct RawObject {
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
    pub e_tag: Option<String>,
}

/// Objects and common prefixes (`folder/`) directly under a prefix.
#[derive(Debug, Default)]
pub struct RawListing {
    pub objects: Vec<RawObject>,
    pub prefixes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListBucketResult {
    #[serde(default)]
    contents: Vec<ListContents>,
    #[serde(default)]
    common_prefixes: Vec<ListPrefix>,
    #[serde(default)]
    next_continuation_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListContents {
    key: String,
    size: u64,
    last_modified: String,
    #[serde(rename = "ETag", default)]
    e_tag: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListPrefix {
    prefix: String,
}

/// The S3 store of a bucket with the settings above, and the raw lister beside it.
pub fn open_bucket(bucket: &str) -> Result<(Arc<AmazonS3>, RawLister), object_store::Error> {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    for (key, value) in storage_options() {
        if let Ok(key) = key.parse() {
            builder = builder.with_config(key, value);
        }
    }
    let get = |key| builder.get_config_value(&key).filter(|v| !v.is_empty());
    let region = get(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
    let virtual_hosted = get(AmazonS3ConfigKey::VirtualHostedStyleRequest)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let bucket_url = match (get(AmazonS3ConfigKey::Endpoint), virtual_hosted) {
        (Some(endpoint), true) => endpoint,
        (Some(endpoint), false) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
        (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
    };
    let store = Arc::new(builder.build()?);
    let client =
        ReqwestConnector::default().connect(&ClientOptions::new().with_allow_http(true))?;
    let lister = RawLister {
        store: store.clone(),
        client,
        bucket_url,
        region,
    };
    Ok((store, lister))
}

impl RawLister {
    /// Every object and common prefix directly under `prefix` (which ends in `/`,
    /// or is empty for the bucket's root), across all pages.
    pub async fn list(&self, prefix: &str) -> Result<RawListing, object_store::Error> {
        let mut listing = RawListing::default();
        let mut token: Option<String> = None;
        loop {
            let page = self.page(prefix, token.as_deref()).await?;
            listing
                .prefixes
                .extend(page.common_prefixes.into_iter().map(|p| p.prefix));
            for c in page.contents {
                let last_modified = DateTime::parse_from_rfc3339(&c.last_modified)
                    .map_err(|e| generic(format!("bad LastModified for {:?}: {e}", c.key)))?
                    .with_timezone(&Utc);
                listing.objects.push(RawObject {
                    key: c.key,
                    size: c.size,
                    last_modified,
                    e_tag: c.e_tag,
                });
            }
            match page.next_continuation_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => return Ok(listing),
            }
        }
    }

    async fn page(
        &self,
        prefix: &str,
        token: Option<&str>,
    ) -> Result<ListBucketResult, object_store::Error> {
        let mut query = format!("list-type=2&delimiter=%2F&prefix={}", encode(prefix));
        if let Some(token) = token {
            query.push_str(&format!("&continuation-token={}", encode(token)));
        }
        let uri = format!("{}?{query}", self.bucket_url);
        let mut request = http::Request::get(&uri)
            .body(HttpRequestBody::empty())
            .map_err(|e| generic(format!("bad list request {uri}: {e}")))?;
        let credential = self.store.credentials().get_credential().await?;
        AwsAuthorizer::new(&credential, "s3", &self.region).authorize(&mut request, None);
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| generic(format!("listing {uri}: {e}")))?;
        let status = response.status();
        let body = response
            .into_body()
            .bytes()
            .await
            .map_err(|e| generic(format!("listing {uri}: {e}")))?;
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            return Err(generic(format!("listing {uri}: HTTP {status}: {text}")));
        }
        quick_xml::de::from_str(&text).map_err(|e| {
            generic(format!(
                "listing {uri}: unreadable ListObjectsV2 answer: {e}"
            ))
        })
    }
}

/// RFC 3986's unreserved characters: everything else is percent-encoded.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// RFC 3986 percent-encoding of everything but unreserved characters, as SigV4
/// canonicalises query values.
fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, UNRESERVED).to_string()
}

fn generic(message: String) -> object_store::Error {
    object_store::Error::Generic {
        store: "S3",
        source: message.into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_percent_encoded_like_sigv4() {
        assert_eq!(super::encode("landed/é x+y"), "landed%2F%C3%A9%20x%2By");
        assert_eq!(super::encode("a-b_c.d~e"), "a-b_c.d~e");
    }
}
