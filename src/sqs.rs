//! The two SQS calls `events listen` needs, ReceiveMessage (long polling) and
//! DeleteMessage, in SQS's JSON protocol, signed with object_store's SigV4
//! authorizer and the same credentials and region as S3 (src/s3.rs). A whole
//! AWS SDK for two calls would double the build.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AwsAuthorizer, AwsCredential};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::{ClientOptions, CredentialProvider};
use serde_json::{Value, json};

/// Why the queue could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SqsError {
    #[error(
        "--sqs-queue-url {0:?} is not a queue URL (https://sqs.<region>.amazonaws.com/<account>/<queue>)"
    )]
    BadUrl(String),
    #[error("cannot set up the SQS client (S3_REGION, S3_ACCESS_KEY, S3_SECRET_KEY configure it)")]
    Config(#[source] object_store::Error),
    #[error("SQS {action} on {url} failed: {message}")]
    Call {
        action: &'static str,
        url: String,
        message: String,
    },
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub receipt: String,
    pub body: String,
}

/// A queue, by its URL.
pub struct Queue {
    url: String,
    /// Where the JSON protocol is spoken: the queue URL's scheme, host and port.
    endpoint: String,
    region: String,
    credentials: Arc<dyn CredentialProvider<Credential = AwsCredential>>,
    client: HttpClient,
    /// Long-polling wait per receive (SQS allows 0–20 s).
    wait: Duration,
    /// How long a received message stays hidden from other receivers.
    visibility: Duration,
}

impl Queue {
    pub fn open(url: &str, wait: Duration, visibility: Duration) -> Result<Queue, SqsError> {
        let parsed = url::Url::parse(url).map_err(|_| SqsError::BadUrl(url.to_owned()))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| SqsError::BadUrl(url.to_owned()))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.path_segments().map_or(0, |s| s.count()) != 2
        {
            return Err(SqsError::BadUrl(url.to_owned()));
        }
        let endpoint = match parsed.port() {
            Some(port) => format!("{}://{host}:{port}/", parsed.scheme()),
            None => format!("{}://{host}/", parsed.scheme()),
        };
        // The S3 settings' credential chain (keys, web identity, instance
        // metadata); the bucket name is never used.
        let mut builder = AmazonS3Builder::from_env().with_bucket_name("sqs");
        for (key, value) in crate::s3::storage_options() {
            if let Ok(key) = key.parse() {
                builder = builder.with_config(key, value);
            }
        }
        // A queue host names its region (`sqs.eu-west-1.amazonaws.com`).
        let from_host = host
            .strip_prefix("sqs.")
            .and_then(|h| h.split_once('.'))
            .map(|(region, _)| region.to_owned());
        let region = from_host
            .or_else(|| builder.get_config_value(&object_store::aws::AmazonS3ConfigKey::Region))
            .unwrap_or_else(|| "us-east-1".into());
        let store = builder.build().map_err(SqsError::Config)?;
        let client = ReqwestConnector::default()
            .connect(
                &ClientOptions::new()
                    .with_allow_http(true)
                    .with_timeout(wait + Duration::from_secs(30)),
            )
            .map_err(SqsError::Config)?;
        Ok(Queue {
            url: url.to_owned(),
            endpoint,
            region,
            credentials: store.credentials().clone(),
            client,
            wait,
            visibility,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Up to 10 messages, waiting up to the long-polling time for the first.
    pub async fn receive(&self) -> Result<Vec<Message>, SqsError> {
        let answer = self
            .call(
                "ReceiveMessage",
                json!({
                    "QueueUrl": self.url,
                    "MaxNumberOfMessages": 10,
                    "WaitTimeSeconds": self.wait.as_secs().min(20),
                    "VisibilityTimeout": self.visibility.as_secs(),
                }),
            )
            .await?;
        let messages = answer["Messages"].as_array().cloned().unwrap_or_default();
        Ok(messages
            .iter()
            .filter_map(|m| {
                Some(Message {
                    id: m["MessageId"].as_str()?.to_owned(),
                    receipt: m["ReceiptHandle"].as_str()?.to_owned(),
                    body: m["Body"].as_str()?.to_owned(),
                })
            })
            .collect())
    }

    pub async fn delete(&self, receipt: &str) -> Result<(), SqsError> {
        self.call(
            "DeleteMessage",
            json!({"QueueUrl": self.url, "ReceiptHandle": receipt}),
        )
        .await
        .map(drop)
    }

    async fn call(&self, action: &'static str, body: Value) -> Result<Value, SqsError> {
        let fail = |message: String| SqsError::Call {
            action,
            url: self.url.clone(),
            message,
        };
        let body = body.to_string();
        let mut request = http::Request::post(&self.endpoint)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", format!("AmazonSQS.{action}"))
            .body(HttpRequestBody::from(body.into_bytes()))
            .map_err(|e| fail(e.to_string()))?;
        let credential = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| fail(format!("no credentials: {e}")))?;
        AwsAuthorizer::new(&credential, "sqs", &self.region).authorize(&mut request, None);
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .bytes()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let text = answer["message"]
                .as_str()
                .or_else(|| answer["Message"].as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(fail(format!("HTTP {status}: {text}")));
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_urls_are_checked_and_name_their_region() {
        let open = |u: &str| Queue::open(u, Duration::from_secs(1), Duration::from_secs(30));
        let q = open("https://sqs.eu-west-1.amazonaws.com/123456789012/landed").unwrap();
        assert_eq!(q.region, "eu-west-1");
        assert_eq!(q.endpoint, "https://sqs.eu-west-1.amazonaws.com/");
        let q = open("http://127.0.0.1:54330/123456789012/landed").unwrap();
        assert_eq!(q.endpoint, "http://127.0.0.1:54330/");
        for bad in ["landed", "ftp://h/1/q", "https://sqs.x.amazonaws.com/q"] {
            assert!(matches!(open(bad), Err(SqsError::BadUrl(_))), "{bad}");
        }
    }
}
