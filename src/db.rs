//! PostgreSQL connections from `DATABASE_URL` (TLS as libpq's `sslmode` says,
//! see [`tls`]), and identifier quoting.
//!
//! The URL's password never reaches a log or an error: everything that shows the
//! URL shows [`redact`]ed text.

pub mod tls;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::tls::TlsStream;
use tokio_postgres::{Client, Connection, NoTls, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use tls::SslMode;

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
    #[error("DATABASE_URL ({url}): {message}")]
    Tls { url: String, message: String },
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
            DbError::NoUrl | DbError::BadUrl { .. } | DbError::Tls { .. } => Exit::Usage,
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
    let tls_error = |message| DbError::Tls {
        url: redact(url),
        message,
    };
    let (rest, settings) = tls::split(url, |var| std::env::var(var).ok()).map_err(tls_error)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|source| DbError::BadUrl {
        url: redact(url),
        source,
    })?;
    if let Some(name) = application_name {
        config.application_name(name);
    }
    let connect_error = |source| DbError::Connect {
        url: redact(url),
        source,
    };
    let client = match settings.mode {
        SslMode::Disable => {
            config.ssl_mode(PgSslMode::Disable);
            let (client, connection) = config.connect(NoTls).await.map_err(connect_error)?;
            drive(connection);
            client
        }
        mode => {
            config.ssl_mode(if mode == SslMode::Prefer {
                PgSslMode::Prefer
            } else {
                PgSslMode::Require
            });
            let tls = MakeRustlsConnect::new(tls::client_config(&settings).map_err(tls_error)?);
            let (client, connection) = config.connect(tls).await.map_err(connect_error)?;
            drive(connection);
            client
        }
    };
    tracing::debug!(database = %redact(url), sslmode = ?settings.mode, "connected");
    Ok(client)
}

/// Runs the connection's I/O on the current runtime until the client is dropped.
fn drive<T>(connection: Connection<Socket, T>)
where
    T: AsyncRead + AsyncWrite + TlsStream + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed with an error");
        }
    });
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
