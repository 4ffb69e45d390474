//! TLS to PostgreSQL against the project's cluster, which scripts/postgres.sh
//! starts with a self-signed CA, a server certificate for localhost and
//! 127.0.0.1, and a role `tls_only` refused without TLS; and against a second
//! cluster started by the same script with TLS off.

use std::process::Command;

use crate::support::*;

/// The CA certificate scripts/postgres.sh generated for the cluster.
fn ca() -> String {
    server_url();
    let out = Command::new(repo().join("scripts/postgres.sh"))
        .arg("ca")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn port() -> u16 {
    url::Url::parse(server_url())
        .unwrap()
        .port()
        .unwrap_or(5432)
}

/// `pipeline migrate` against `url`.
fn migrate(url: &str) -> Run {
    let dir = project(&sample_config());
    pipeline(dir.path(), Some(url), &["migrate"])
}

#[test]
fn verify_full_accepts_the_right_host_and_refuses_a_wrong_one() {
    let db = TestDb::new("tls_verify");
    let ca = ca();
    let run = migrate(&format!("{}?sslmode=verify-full&sslrootcert={ca}", db.url));
    assert_eq!(run.code, 0, "127.0.0.1 is in the certificate: {run:?}");

    // The same server reached under a name its certificate does not carry.
    let wrong_host = |mode: &str, root: &str| {
        format!(
            "host=wrong.example hostaddr=127.0.0.1 port={} user=pipeline password=pipeline \
             dbname={} sslmode={mode} sslrootcert='{root}'",
            port(),
            db.name
        )
    };
    let run = migrate(&wrong_host("verify-full", &ca));
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("not valid for name"), "{}", run.stderr);
    assert!(!run.stderr.contains("password=pipeline"), "{}", run.stderr);

    // verify-ca checks the chain only.
    let run = migrate(&wrong_host("verify-ca", &ca));
    assert_eq!(run.code, 0, "{run:?}");

    // A CA that did not sign the server's certificate is refused.
    let run = migrate(&format!("{}?sslmode=verify-ca&sslrootcert=system", db.url));
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("UnknownIssuer"), "{}", run.stderr);

    // A verify mode without trusted CAs is a usage error that says what to set.
    let run = migrate(&format!(
        "{}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        db.url
    ));
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("/nonexistent/ca.pem"), "{}", run.stderr);
}

#[test]
fn tls_is_used_by_default_and_not_when_disabled() {
    let db = TestDb::new("tls_default");
    let tls_only = format!(
        "postgres://tls_only:tls_only@127.0.0.1:{}/{}",
        port(),
        db.name
    );
    let run = migrate(&tls_only);
    assert_eq!(
        run.code, 0,
        "sslmode prefer (the default) encrypts when the server can: {run:?}"
    );
    let run = migrate(&format!("{tls_only}?sslmode=disable"));
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("no encryption"), "{}", run.stderr);
}

#[test]
fn require_refuses_a_server_without_tls() {
    // A second cluster, TLS off, in a folder the postgres user can reach.
    let dir = tempfile::Builder::new()
        .prefix("pipeline-notls-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = |action: &str| {
        Command::new(repo().join("scripts/postgres.sh"))
            .arg(action)
            .env("PIPELINE_PG_DIR", dir.path().join("pg"))
            .env("PIPELINE_PG_PORT", port.to_string())
            .env("PIPELINE_PG_TLS", "off")
            .output()
            .unwrap()
    };
    let started = script("start");
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let url = String::from_utf8(started.stdout).unwrap().trim().to_owned();
    let run = migrate(&format!("{url}?sslmode=require"));
    let prefer = migrate(&url);
    script("destroy");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("does not support TLS"),
        "{}",
        run.stderr
    );
    assert_eq!(
        prefer.code, 0,
        "prefer falls back to plain text: {prefer:?}"
    );
}
