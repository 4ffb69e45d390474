//! PostgreSQL connections from `DATABASE_URL`, and identifier quoting.
//!
//! The URL's password never reaches a log or an error: everything that shows the
//! URL shows [`redact`]ed text.

use tokio_postgres::{Client, NoTls};

use crate::exit::Exit;

/// Why the database could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "DATABASE_URL is not set: point it at the PostgreSQL database, e.g. \
         postgres://user:password@127.0.0.1:5432/pipeline (`scripts/postgres.sh start` prints one)"
    )]
    NoUrl,
    #[error("DATABASE_URL ({url}) is not a valid connection string")]
    BadUrl {
        url: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("cannot connect to PostgreSQL at {url}")]
    Connect {
        url: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl DbError {
    pub fn exit(&self) -> Exit {
        match self {
            DbError::NoUrl | DbError::BadUrl { .. } => Exit::Usage,
            DbError::Connect { .. } => Exit::Failure,
        }
    }
}

/// Connects to `DATABASE_URL`; the connection task runs on the current runtime.
pub async fn connect() -> Result<Client, DbError> {
    let url = std::env::var("DATABASE_URL").map_err(|_| DbError::NoUrl)?;
    connect_to(&url).await
}

/// Connects to `DATABASE_URL` with an application_name, so operators can find
/// the session in pg_stat_activity.
pub async fn connect_as(application_name: &str) -> Result<Client, DbError> {
    let url = std::env::var("DATABASE_URL").map_err(|_| DbError::NoUrl)?;
    connect_with(&url, Some(application_name)).await
}

/// Connects to the given URL or key=value connection string.
pub async fn connect_to(url: &str) -> Result<Client, DbError> {
    connect_with(url, None).await
}

async fn connect_with(url: &str, application_name: Option<&str>) -> Result<Client, DbError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|source| DbError::BadUrl {
        url: redact(url),
        source,
    })?;
    if let Some(name) = application_name {
        config.application_name(name);
    }
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|source| DbError::Connect {
            url: redact(url),
            source,
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed with an error");
        }
    });
    tracing::debug!(database = %redact(url), "connected");
    Ok(client)
}

/// The URL with its password replaced by `***` (URL and key=value forms).
pub fn redact(url: &str) -> String {
    if let Ok(mut parsed) = url::Url::parse(url) {
        if parsed.password().is_some() {
            // Only fails for URLs that cannot have a password, which this one has.
            let _ = parsed.set_password(Some("***"));
        }
        if parsed.query().is_some_and(|q| q.contains("password=")) {
            let pairs: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "password" {
                        "***".into()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            parsed.query_pairs_mut().clear().extend_pairs(pairs);
        }
        return parsed.to_string();
    }
    // key=value form: password=secret or password='se cret'
    let mut out = Vec::new();
    let mut words = url.split_whitespace();
    while let Some(word) = words.next() {
        match word.split_once('=') {
            Some((k, v)) if k.trim() == "password" => {
                out.push("password=***".to_owned());
                // A quoted value may span several words.
                if v.starts_with('\'') && !(v.len() > 1 && v.ends_with('\'')) {
                    for rest in words.by_ref() {
                        if rest.ends_with('\'') {
                            break;
                        }
                    }
                }
            }
            _ => out.push(word.to_owned()),
        }
    }
    out.join(" ")
}

/// A PostgreSQL identifier quoted for SQL text. Names from config are already
/// checked to be `^[a-z_][a-z0-9_]{0,62}$`; quoting also keeps keywords safe.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_url_password() {
        let r = redact("postgres://app:s3cret@db.example:5432/pipe?sslmode=disable");
        assert!(!r.contains("s3cret"), "{r}");
        assert!(r.contains("app:***@db.example:5432/pipe"), "{r}");
    }

    #[test]
    fn redact_hides_query_and_keyvalue_passwords() {
        let r = redact("postgres://app@db/pipe?password=s3cret&sslmode=disable");
        assert!(!r.contains("s3cret"), "{r}");
        assert!(r.contains("sslmode=disable"), "{r}");
        let r = redact("host=db user=app password=s3cret dbname=pipe");
        assert_eq!(r, "host=db user=app password=*** dbname=pipe");
        let r = redact("host=db password='s3 cret' dbname=pipe");
        assert_eq!(r, "host=db password=*** dbname=pipe");
    }

    #[test]
    fn redact_keeps_urls_without_password() {
        assert_eq!(redact("postgres://app@db/pipe"), "postgres://app@db/pipe");
    }

    #[test]
    fn quote_ident_doubles_quotes() {
        assert_eq!(quote_ident("citizens"), "\"citizens\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
