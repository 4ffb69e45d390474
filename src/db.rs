//! PostgreSQL connections from `DATABASE_URL` (TLS as libpq's `sslmode` says,
//! see [`tls`]), and identifier quoting.
//!
//! The URL's password never reaches a log or an error: everything that shows the
//! URL shows [`redact`]ed text.

mod libpq;
mod pool;
pub mod tls;

pub use pool::{Pool, Pooled};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::tls::TlsStream;
use tokio_postgres::{Client, Connection, NoTls, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use libpq::Env as _;
use tls::SslMode;

use crate::exit::Exit;

/// Why the database could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "DATABASE_URL is not set (or is empty), nor are libpq's PGHOST/PGPORT/PGUSER/PGDATABASE: \
         point it at the PostgreSQL database, e.g. postgres://user:password@127.0.0.1:5432/pipeline \
         (`scripts/postgres.sh start` prints one); a password left out is read from PGPASSWORD or ~/.pgpass"
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
    /// A libpq variable the connection would use holds what libpq refuses.
    #[error("{var}: {message}")]
    Env { var: &'static str, message: String },
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
            DbError::NoUrl | DbError::BadUrl { .. } | DbError::Tls { .. } | DbError::Env { .. } => {
                Exit::Usage
            }
            DbError::Connect { .. } => Exit::Failure,
        }
    }
}

/// `DATABASE_URL`; set but empty (or blank) is the same as unset. Unset, the
/// connection comes from libpq's variables alone (`PGHOST`, `PGUSER`, …)
/// when they name a server, as psql's would.
fn database_url() -> Result<String, DbError> {
    match std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        Some(url) => Ok(url),
        None if libpq::names_a_server(&libpq::Process) => Ok(String::new()),
        None => Err(DbError::NoUrl),
    }
}

/// Connects to `DATABASE_URL`; the connection task runs on the current runtime.
pub async fn connect() -> Result<Client, DbError> {
    connect_to(&database_url()?).await
}

/// Connects to `DATABASE_URL` with an application_name, so operators can find
/// the session in pg_stat_activity.
pub async fn connect_as(application_name: &str) -> Result<Client, DbError> {
    connect_with(&database_url()?, Some(application_name)).await
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
    libpq::check(&config, &libpq::Process)
        .map_err(|(var, message)| DbError::Env { var, message })?;
    libpq::fill(&mut config, &libpq::Process);
    match application_name {
        Some(name) => {
            config.application_name(libpq::application_name(name, &libpq::Process));
        }
        None => {
            if let Some(name) = libpq::Process.var("PGAPPNAME") {
                config.application_name(&name);
            }
        }
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
    tracing::debug!(event = "connected", database = %redact(url), sslmode = ?settings.mode, "connected");
    session_limits(&client).await.map_err(connect_error)?;
    Ok(client)
}

/// How long any one statement may run: `PIPELINE_STATEMENT_TIMEOUT_SECONDS`
/// (0: no limit), else the role's or database's `statement_timeout`, else an
/// hour. A statement that never ends is cancelled by the server, so its
/// backend does not outlive a killed client either.
pub const DEFAULT_STATEMENT_TIMEOUT_S: u64 = 3600;

/// The limit `PIPELINE_STATEMENT_TIMEOUT_SECONDS` sets (else an hour) for
/// work the pipeline does itself, such as an audit DataFusion evaluates while
/// the model's transaction waits; None when it is 0 (no limit).
pub fn statement_timeout() -> Option<std::time::Duration> {
    let secs = std::env::var("PIPELINE_STATEMENT_TIMEOUT_SECONDS")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_STATEMENT_TIMEOUT_S);
    (secs > 0).then(|| std::time::Duration::from_secs(secs))
}

/// Sets the session's limits in one round trip: [`DEFAULT_STATEMENT_TIMEOUT_S`]
/// unless the variable or the server says otherwise, and no
/// `idle_in_transaction_session_timeout`: a pipeline transaction is idle
/// only while the process works for it (helper connections COPY, DataFusion
/// computes a model and its audits), and it ends when the process does.
async fn session_limits(client: &Client) -> Result<(), tokio_postgres::Error> {
    let given = std::env::var("PIPELINE_STATEMENT_TIMEOUT_SECONDS")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let ms = given
        .unwrap_or(DEFAULT_STATEMENT_TIMEOUT_S)
        .saturating_mul(1000)
        .min(i32::MAX as u64);
    client
        .execute(
            "SELECT set_config('statement_timeout', $1::text, false)
              WHERE $2 OR current_setting('statement_timeout') IN ('0', '0ms')
             UNION ALL
             SELECT set_config('idle_in_transaction_session_timeout', '0', false)",
            &[&ms.to_string(), &given.is_some()],
        )
        .await
        .map(drop)
}

/// Runs the connection's I/O on the current runtime until the client is dropped.
fn drive<T>(connection: Connection<Socket, T>)
where
    T: AsyncRead + AsyncWrite + TlsStream + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            let why = match e.as_db_error() {
                Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
                None => crate::exit::report(&e),
            };
            // Noted first: the client already sees its channel closed.
            crate::exit::note_connection_end(why.clone());
            tracing::warn!(event = "connection_error", error = %why, "PostgreSQL closed the connection");
        }
    });
}

/// The URL or key=value string with every password hidden (see
/// [`crate::redact`]); for an empty one, where the settings came from.
pub fn redact(url: &str) -> String {
    if url.trim().is_empty() {
        return "the server libpq's PG* variables name".into();
    }
    crate::redact::connection_string(url)
}

/// A PostgreSQL identifier quoted for SQL text. Names from config are already
/// checked to be `^[a-z_][a-z0-9_]{0,62}$`; quoting also keeps keywords safe.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a PostgreSQL string literal: `'it''s'`.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A table for SQL text: `schema."name"`. The schema is one the pipeline owns or
/// reads (stage, core, mart...; written bare when it is a plain lower-case word,
/// quoted otherwise); the name is always quoted. The one way statements name a
/// table, and the key of its period lock.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Table {
    schema: String,
    name: String,
}

impl Table {
    pub fn new(schema: &str, name: &str) -> Table {
        Table {
            schema: schema.to_owned(),
            name: name.to_owned(),
        }
    }

    /// `stage."<dataset>"`
    pub fn stage(dataset: &str) -> Table {
        Table::new("stage", dataset)
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plain = !self.schema.is_empty()
            && self
                .schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !self.schema.as_bytes()[0].is_ascii_digit();
        if plain {
            write!(f, "{}.{}", self.schema, quote_ident(&self.name))
        } else {
            write!(
                f,
                "{}.{}",
                quote_ident(&self.schema),
                quote_ident(&self.name)
            )
        }
    }
}

/// One column of a table as PostgreSQL reports it (`format_type` spelling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgColumn {
    pub name: String,
    pub sql_type: String,
    pub not_null: bool,
}

/// The columns of `table` from the catalog, in order; None when it does not exist.
pub async fn table_columns(
    client: &impl tokio_postgres::GenericClient,
    table: &Table,
) -> Result<Option<Vec<PgColumn>>, tokio_postgres::Error> {
    let table = table.to_string();
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull
               FROM pg_attribute a
              WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[&table],
        )
        .await?;
    Ok(Some(
        rows.iter()
            .map(|r| PgColumn {
                name: r.get(0),
                sql_type: r.get(1),
                not_null: r.get(2),
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_double_their_quotes() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("2025-06"), "'2025-06'");
    }

    #[test]
    fn tables_quote_their_names_and_odd_schemas() {
        assert_eq!(Table::stage("sales").to_string(), "stage.\"sales\"");
        assert_eq!(Table::new("core", "a\"b").to_string(), "core.\"a\"\"b\"");
        assert_eq!(
            Table::new("Odd Schema", "t").to_string(),
            "\"Odd Schema\".\"t\""
        );
        assert_eq!(Table::new("1x", "t").to_string(), "\"1x\".\"t\"");
    }

    #[test]
    fn quote_ident_doubles_quotes() {
        assert_eq!(quote_ident("citizens"), "\"citizens\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
