//! The one place that hides secrets before text reaches a log line, an error or
//! JSON output.
//!
//! A connection string is shown only after [`connection_string`]: in URL form the
//! whole userinfo after the user name and every `password` query value become `***`;
//! in libpq's key=value form every `password` value does. When the text fits
//! neither form it is not shown at all: a string that failed to parse is exactly the
//! one whose password could sit anywhere.

/// What replaces a secret.
pub const HIDDEN: &str = "***";

/// Any text — a message, a log line, a JSON document — with the secrets it may
/// quote hidden: the password of every `scheme://user:password@` (to the last
/// `@` of the word, so a password holding `@` or `/` is hidden whole), and
/// every `password=value` pair. Libraries quote the URLs they were given
/// (object_store's request errors, a server echoing a login): this is the net
/// every output goes through.
pub fn text(s: &str) -> std::borrow::Cow<'_, str> {
    use std::sync::OnceLock;
    static USERINFO: OnceLock<regex::Regex> = OnceLock::new();
    static PAIR: OnceLock<regex::Regex> = OnceLock::new();
    let userinfo = USERINFO.get_or_init(|| {
        regex::Regex::new(r#"(?i)([a-z][a-z0-9+.-]*://[^\s/:@"'\\]*):[^\s"'\\]*@"#)
            .expect("a valid pattern")
    });
    let pair = PAIR.get_or_init(|| {
        regex::Regex::new(r#"(?i)\b([a-z_]*password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s"&]+)"#)
            .expect("a valid pattern")
    });
    let once = userinfo.replace_all(s, format!("${{1}}:{HIDDEN}@").as_str());
    match pair.replace_all(&once, format!("${{1}}{HIDDEN}").as_str()) {
        std::borrow::Cow::Borrowed(_) => once,
        std::borrow::Cow::Owned(o) => o.into(),
    }
}

/// `s` with every password replaced by `***`, or a placeholder when `s` cannot be
/// read well enough to know where its password is.
pub fn connection_string(s: &str) -> String {
    let trimmed = s.trim();
    if let Some(scheme_end) = trimmed.find("://") {
        return url_form(trimmed, scheme_end + 3);
    }
    key_value_form(trimmed)
        .unwrap_or_else(|| "<connection string hidden: it could not be parsed>".into())
}

/// `scheme://[user[:password]@]host...[?k=v&...]`. The password may hold `/`, `#`,
/// `?` or `@` unescaped, so the userinfo ends at the *last* `@` (a query containing
/// `@` makes us hide too much, never too little).
fn url_form(s: &str, authority_start: usize) -> String {
    let (head, rest) = s.split_at(authority_start);
    let mut out = head.to_owned();
    let rest = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push(':');
                    out.push_str(HIDDEN);
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    match rest.split_once('?') {
        None => out.push_str(rest),
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if is_secret_key(k) => format!("{k}={HIDDEN}"),
                    _ => pair.to_owned(),
                })
                .collect();
            out.push_str(&pairs.join("&"));
        }
    }
    out
}

/// libpq's `key = value` pairs: spaces around `=` allowed, values bare or
/// single-quoted with `\'` and `\\` escapes. None when the text is not made of
/// such pairs (an unterminated quote, a key without `=`).
fn key_value_form(s: &str) -> Option<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut pairs = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i == chars.len() {
            break;
        }
        let key_start = i;
        while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '=' {
            i += 1;
        }
        let key: String = chars[key_start..i].iter().collect();
        skip_ws(&mut i);
        if key.is_empty() || chars.get(i) != Some(&'=') {
            return None;
        }
        i += 1;
        skip_ws(&mut i);
        let value_start = i;
        if chars.get(i) == Some(&'\'') {
            i += 1;
            loop {
                match chars.get(i) {
                    None => return None,
                    Some('\\') => i += 2,
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            if i > chars.len() {
                return None;
            }
        } else {
            while i < chars.len() && !chars[i].is_whitespace() {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i = i.min(chars.len());
        }
        let value: String = chars[value_start..i].iter().collect();
        if is_secret_key(&key) {
            pairs.push(format!("{key}={HIDDEN}"));
        } else {
            pairs.push(format!("{key}={value}"));
        }
    }
    Some(pairs.join(" "))
}

/// Keys whose values are secrets, in any case (`password`, `sslpassword`, …).
fn is_secret_key(key: &str) -> bool {
    let k = key.trim().to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k == "passfile"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every form we know of, with the password `S3cr3t` in it; none may show it
    /// (or a piece of it), and the harmless parts stay readable.
    #[test]
    fn no_form_of_a_connection_string_shows_its_password() {
        let cases: &[(&str, &str)] = &[
            (
                "postgres://app:S3cr3t@db:5432/pipe",
                "postgres://app:***@db:5432/pipe",
            ),
            (
                "postgresql://app:S3cr3t@db/pipe?sslmode=require",
                "postgresql://app:***@db/pipe?sslmode=require",
            ),
            (
                "postgres://app:S3/cr3t@db/pipe",
                "postgres://app:***@db/pipe",
            ),
            (
                "postgres://app:S3#cr3t@db/pipe",
                "postgres://app:***@db/pipe",
            ),
            (
                "postgres://app:S3?cr3t@db/pipe",
                "postgres://app:***@db/pipe",
            ),
            (
                "postgres://app:S3@cr3t@db/pipe",
                "postgres://app:***@db/pipe",
            ),
            (
                "postgres://app:S3cr3t@db:notaport/pipe",
                "postgres://app:***@db:notaport/pipe",
            ),
            (
                "postgres://app:S3cr3t@[::1/pipe",
                "postgres://app:***@[::1/pipe",
            ),
            (
                "postgres://app@db/pipe?password=S3cr3t&sslmode=disable",
                "postgres://app@db/pipe?password=***&sslmode=disable",
            ),
            (
                "postgres://app@db/pipe?PASSWORD=S3cr3t",
                "postgres://app@db/pipe?PASSWORD=***",
            ),
            (
                "  postgres://app:S3cr3t@db/pipe  ",
                "postgres://app:***@db/pipe",
            ),
            (
                "host=db user=app password=S3cr3t dbname=pipe",
                "host=db user=app password=*** dbname=pipe",
            ),
            (
                "host=db password = S3cr3t dbname=pipe",
                "host=db password=*** dbname=pipe",
            ),
            ("host=db PASSWORD=S3cr3t", "host=db PASSWORD=***"),
            (
                "host=db password='S3 cr3t' dbname=pipe",
                "host=db password=*** dbname=pipe",
            ),
            (
                r"host=db password='S3cr3t\' x' dbname=pipe",
                "host=db password=*** dbname=pipe",
            ),
            (
                r"host=db password=S3\ cr3t dbname=pipe",
                "host=db password=*** dbname=pipe",
            ),
            ("host=db sslpassword=S3cr3t", "host=db sslpassword=***"),
        ];
        for (input, expected) in cases {
            let shown = connection_string(input);
            assert_eq!(&shown, expected, "{input}");
        }
    }

    #[test]
    fn free_text_hides_every_password_it_quotes() {
        for (input, expected) in [
            (
                "Error performing GET http://user:PW0rd@127.0.0.1:1/bkt?list-type=2 in 2s",
                "Error performing GET http://user:***@127.0.0.1:1/bkt?list-type=2 in 2s",
            ),
            (
                r#"{"error":"at s3://k:p@ss/w@host/x and postgres://a:b@h/d"}"#,
                r#"{"error":"at s3://k:***@host/x and postgres://a:***@h/d"}"#,
            ),
            (
                "login failed: password=S3cr3t user=x",
                "login failed: password=*** user=x",
            ),
            ("PGPASSWORD = 'S3 cr3t' next", "PGPASSWORD = *** next"),
            (
                "https://host/path?sslpassword=S3cr3t&x=1",
                "https://host/path?sslpassword=***&x=1",
            ),
        ] {
            assert_eq!(text(input), expected, "{input}");
        }
        assert!(matches!(
            text("nothing secret: http://host/x, a=b"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn unparseable_strings_are_hidden_whole() {
        for input in [
            "host=db password='S3cr3t",
            "password S3cr3t",
            "S3cr3t",
            "host=db password=",
        ] {
            let shown = connection_string(input);
            assert!(!shown.contains("S3cr3t"), "{input} → {shown}");
        }
    }

    #[test]
    fn urls_without_password_are_unchanged() {
        assert_eq!(
            connection_string("postgres://app@db/pipe"),
            "postgres://app@db/pipe"
        );
        assert_eq!(
            connection_string("postgres://db/pipe"),
            "postgres://db/pipe"
        );
    }
}
