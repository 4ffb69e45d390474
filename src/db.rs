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

/// The URL or key=value string with every password hidden (see [`crate::redact`]).
pub fn redact(url: &str) -> String {
    crate::redact::connection_string(url)
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
    fn quote_ident_doubles_quotes() {
        assert_eq!(quote_ident("citizens"), "\"citizens\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
