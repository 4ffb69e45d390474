//! libpq's environment, as psql and every libpq tool read it: what the
//! connection string leaves out comes from `PGHOST`, `PGPORT`, `PGUSER`,
//! `PGDATABASE`, `PGPASSWORD`, then the password file (`PGPASSFILE`, else
//! `~/.pgpass`), and `PGAPPNAME`. (`PGSSLMODE`/`PGSSLROOTCERT` are read with the
//! TLS settings, in `tls.rs`.) tokio-postgres reads none of them.

use std::path::{Path, PathBuf};

use tokio_postgres::config::Host;

/// Where libpq's variables are read from (the process environment, or a map
/// in tests).
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment; empty values count as unset, as in libpq.
pub struct Process;

impl Env for Process {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

/// Whether the environment names a server at all (then an unset
/// `DATABASE_URL` is not a mistake: libpq's variables say where to connect).
pub fn names_a_server(env: &impl Env) -> bool {
    ["PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER"]
        .iter()
        .any(|v| env.var(v).is_some())
}

/// Refuses what libpq refuses in a variable the connection would use: a
/// `PGPORT` that is not a port (`54401x`: libpq says "invalid port number";
/// ignoring it would connect to 5432, another server).
pub fn check(
    config: &tokio_postgres::Config,
    env: &impl Env,
) -> Result<(), (&'static str, String)> {
    if config.get_ports().is_empty()
        && let Some(port) = env.var("PGPORT")
        && port.trim().parse::<u16>().is_err()
    {
        return Err(("PGPORT", format!("invalid port number: \"{port}\"")));
    }
    Ok(())
}

/// Fills what `config` leaves out from libpq's variables and password file.
pub fn fill(config: &mut tokio_postgres::Config, env: &impl Env) {
    if config.get_hosts().is_empty() {
        match env.var("PGHOST") {
            Some(hosts) => hosts.split(',').for_each(|h| {
                config.host(h.trim());
            }),
            // libpq's default: the local socket directory, else localhost.
            None if Path::new("/var/run/postgresql").is_dir() => {
                config.host_path("/var/run/postgresql");
            }
            None => {
                config.host("localhost");
            }
        }
    }
    if config.get_ports().is_empty()
        && let Some(port) = env.var("PGPORT").and_then(|p| p.trim().parse().ok())
    {
        config.port(port);
    }
    if config.get_user().is_none()
        && let Some(user) = env
            .var("PGUSER")
            .or_else(|| env.var("USER"))
            .or_else(|| env.var("LOGNAME"))
    {
        config.user(user);
    }
    if config.get_dbname().is_none()
        && let Some(db) = env.var("PGDATABASE")
    {
        config.dbname(db);
    }
    if config.get_password().is_none()
        && let Some(password) = env.var("PGPASSWORD").or_else(|| from_passfile(config, env))
    {
        config.password(password);
    }
}

/// The application name: `PGAPPNAME` (the operator's) with ours after it.
pub fn application_name(ours: &str, env: &impl Env) -> String {
    let name = match env.var("PGAPPNAME") {
        Some(theirs) => format!("{theirs} ({ours})"),
        None => ours.to_owned(),
    };
    // PostgreSQL keeps 63 bytes.
    let mut end = name.len().min(63);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

/// The password file's password for the connection's host, port, database
/// and user (`*` matches anything, `\` escapes `:` and `\`); the first match
/// wins. A file readable by group or others is ignored, as libpq does.
fn from_passfile(config: &tokio_postgres::Config, env: &impl Env) -> Option<String> {
    let path = env
        .var("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| env.var("HOME").map(|h| Path::new(&h).join(".pgpass")))?;
    // No file: nothing to say, as libpq (a warning on every command otherwise).
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() {
        // A FIFO or a device would block the read, or never end.
        tracing::warn!(event = "passfile_ignored", path = %path.display(), "the password file is not a plain file; ignored, as libpq does");
        return None;
    }
    if !private(&meta) {
        tracing::warn!(event = "passfile_ignored", path = %path.display(), "the password file is readable by group or others; ignored (chmod 0600 it), as libpq does");
        return None;
    }
    // libpq reads bytes: a line that is not UTF-8 does not void the others.
    let text = String::from_utf8_lossy(&std::fs::read(&path).ok()?).into_owned();
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        // libpq matches a socket connection as `localhost`.
        _ => "localhost".to_owned(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or_default();
    let db = config.get_dbname().unwrap_or(user);
    lookup(&text, [&host, &port, db, user])
}

#[cfg(unix)]
fn private(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o077 == 0
}

#[cfg(not(unix))]
fn private(_: &std::fs::Metadata) -> bool {
    true
}

/// The password of the first line of `text` whose four fields match `want`.
fn lookup(text: &str, want: [&str; 4]) -> Option<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let fields = split_fields(line);
            let [host, port, db, user, password] = fields.as_slice() else {
                return None;
            };
            let fits = [host, port, db, user]
                .iter()
                .zip(want)
                .all(|(field, want)| field.as_str() == "*" || field.as_str() == want);
            fits.then(|| password.clone())
        })
}

/// `a:b\:c:d` → [a, b:c, d].
fn split_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("one field").push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Map(HashMap<&'static str, String>);

    impl Env for Map {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    #[test]
    fn pgpass_lines_match_field_by_field_with_wildcards_and_escapes() {
        let text = "# comment\n\
                    db1:5432:*:app:first\n\
                    *:*:pipe:app:p\\:w\\\\d\n\
                    *:*:*:*:fallback\n";
        assert_eq!(
            lookup(text, ["db1", "5432", "x", "app"]).as_deref(),
            Some("first")
        );
        assert_eq!(
            lookup(text, ["db2", "6000", "pipe", "app"]).as_deref(),
            Some("p:w\\d")
        );
        assert_eq!(
            lookup(text, ["h", "1", "d", "u"]).as_deref(),
            Some("fallback")
        );
        assert_eq!(lookup("h:1:d:u\n", ["h", "1", "d", "u"]), None);
    }

    #[test]
    fn the_password_file_is_read_as_libpq_reads_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let config: tokio_postgres::Config = "postgres://app@h:1/d".parse().unwrap();
        let with = |path: &Path| Map(HashMap::from([("PGPASSFILE", path.display().to_string())]));
        // Missing: none, quietly.
        assert_eq!(
            from_passfile(&config, &with(&dir.path().join("none"))),
            None
        );
        // A line that is not UTF-8 does not void the one that matches.
        let file = dir.path().join("pgpass");
        std::fs::write(&file, b"x:1:d:app:\xff\xfe\nh:1:d:app:right\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            from_passfile(&config, &with(&file)).as_deref(),
            Some("right")
        );
        // Readable by others: ignored.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(from_passfile(&config, &with(&file)), None);
        // A FIFO is not read (it would block forever).
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        assert_eq!(from_passfile(&config, &with(&fifo)), None);
    }

    #[test]
    fn what_the_url_leaves_out_comes_from_the_environment() {
        let env = Map(HashMap::from([
            ("PGHOST", "db.internal".to_owned()),
            ("PGPORT", "6543".to_owned()),
            ("PGUSER", "ops".to_owned()),
            ("PGDATABASE", "warehouse".to_owned()),
            ("PGPASSWORD", "S3cret".to_owned()),
        ]));
        let mut empty: tokio_postgres::Config = "".parse().unwrap();
        fill(&mut empty, &env);
        assert_eq!(empty.get_hosts(), [Host::Tcp("db.internal".into())]);
        assert_eq!(empty.get_ports(), [6543]);
        assert_eq!(empty.get_user(), Some("ops"));
        assert_eq!(empty.get_dbname(), Some("warehouse"));
        assert_eq!(empty.get_password(), Some(&b"S3cret"[..]));
        // The URL's own values win.
        let mut given: tokio_postgres::Config = "postgres://app:mine@h:1/d".parse().unwrap();
        fill(&mut given, &env);
        assert_eq!(given.get_user(), Some("app"));
        assert_eq!(given.get_password(), Some(&b"mine"[..]));
        assert_eq!(given.get_ports(), [1]);
        assert!(names_a_server(&env));
        assert!(!names_a_server(&Map(HashMap::new())));
        // A port libpq refuses is refused, not replaced by 5432.
        let bad = Map(HashMap::from([("PGPORT", "54401x".to_owned())]));
        let (var, message) = check(&"".parse().unwrap(), &bad).unwrap_err();
        assert_eq!(
            (var, message.as_str()),
            ("PGPORT", "invalid port number: \"54401x\"")
        );
        assert!(
            check(&"postgres://h:1/d".parse().unwrap(), &bad).is_ok(),
            "the URL's port wins"
        );
    }

    #[test]
    fn the_application_name_keeps_the_operators_and_ours_within_63_bytes() {
        let env = Map(HashMap::from([("PGAPPNAME", "nightly".to_owned())]));
        assert_eq!(
            application_name("pipeline run", &env),
            "nightly (pipeline run)"
        );
        assert_eq!(
            application_name(&"é".repeat(40), &Map(HashMap::new())).len(),
            62
        );
    }
}
