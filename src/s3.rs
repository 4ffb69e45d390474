//! The one place S3 settings are read: `S3_ENDPOINT`, `S3_REGION`,
//! `S3_ACCESS_KEY`, `S3_SECRET_KEY` (standard `AWS_*` variables work too), as
//! object_store configuration keys, for the landed dir and the Delta tables alike.

use std::collections::HashMap;

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
