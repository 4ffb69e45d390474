//! What the YAML text says that serde cannot see: keys written twice, and
//! `decimal(p,s)` split in two by a flow mapping's comma.

use std::collections::HashMap;

use super::Problem;

/// One mapping being read: the keys seen in it so far and where.
struct Frame {
    indent: usize,
    path: String,
    keys: HashMap<String, usize>,
    last_key: Option<String>,
}

/// Every key written twice in one block mapping, with both lines.
///
/// serde keeps the last of two equal map keys without a word, so two `id:`
/// columns or two datasets with one name would silently become one. This reads
/// the block structure of the text (indentation, `- ` items, block scalars) and
/// reports each repeat; keys inside flow mappings `{ ... }` are serde's concern
/// (it refuses repeated struct fields itself).
pub(super) fn duplicate_keys(text: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    // Lines indented deeper than this belong to a `|` or `>` block scalar.
    let mut scalar_above: Option<usize> = None;
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let body = raw.trim_start_matches(' ');
        let mut indent = raw.len() - body.len();
        if body.trim().is_empty() {
            continue;
        }
        if let Some(limit) = scalar_above {
            if indent > limit {
                continue;
            }
            scalar_above = None;
        }
        if body.starts_with('#') {
            continue;
        }
        if body.starts_with("---") || body.starts_with("...") {
            stack.clear();
            continue;
        }
        let mut body = body;
        let mut item = false;
        while let Some(rest) = body
            .strip_prefix("- ")
            .or_else(|| body.strip_prefix('-').filter(|r| r.is_empty()))
        {
            // A sequence item: what follows starts a new mapping, two columns in.
            let skipped = body.len() - rest.len();
            let rest_trimmed = rest.trim_start_matches(' ');
            indent += skipped + (rest.len() - rest_trimmed.len());
            body = rest_trimmed;
            item = true;
        }
        let Some((key, value)) = split_key(body) else {
            continue;
        };
        while stack
            .last()
            .is_some_and(|f| f.indent > indent || (item && f.indent == indent))
        {
            stack.pop();
        }
        if stack.last().is_none_or(|f| f.indent < indent) {
            let path = match stack.last() {
                None => String::new(),
                Some(parent) => {
                    let name = parent.last_key.clone().unwrap_or_default();
                    if parent.path.is_empty() {
                        name
                    } else {
                        format!("{}.{name}", parent.path)
                    }
                }
            };
            stack.push(Frame {
                indent,
                path,
                keys: HashMap::new(),
                last_key: None,
            });
        }
        let frame = stack.last_mut().expect("a frame was pushed");
        if let Some(&first) = frame.keys.get(&key) {
            problems.push(duplicate(&frame.path, &key, first, line_no));
        } else {
            frame.keys.insert(key.clone(), line_no);
        }
        frame.last_key = Some(key);
        let value = value.split(" #").next().unwrap_or("").trim();
        if value.starts_with('|') || value.starts_with('>') {
            scalar_above = Some(indent);
        }
    }
    problems
}

fn duplicate(path: &str, key: &str, first: usize, second: usize) -> Problem {
    let mut parts = path.split('.');
    let dataset = match (parts.next(), parts.next()) {
        (Some("datasets"), Some(d)) => Some(d.to_owned()),
        (Some("datasets"), None) => Some(key.to_owned()),
        _ => None,
    };
    let column =
        (path.ends_with(".columns") && path.starts_with("datasets.")).then(|| key.to_owned());
    let place = if path.is_empty() {
        "at the top level".to_owned()
    } else {
        format!("under `{path}`")
    };
    Problem {
        line: Some(second),
        dataset,
        column,
        key: Some(key.to_owned()),
        message: format!(
            "written twice {place}, on line {first} and line {second}; YAML would keep only \
             the last one, so remove or rename one of them"
        ),
    }
}

/// The key and the rest of a `key: value` line, or `None` for anything else
/// (a scalar list item, a flow collection, a continuation line).
fn split_key(body: &str) -> Option<(String, &str)> {
    let quote = body.chars().next()?;
    if quote == '\'' || quote == '"' {
        let end = body[1..].find(quote)? + 1;
        let rest = body[end + 1..].trim_start_matches(' ');
        let value = rest.strip_prefix(':')?;
        return (value.is_empty() || value.starts_with(' '))
            .then(|| (body[1..end].to_owned(), value));
    }
    if matches!(quote, '{' | '[' | '&' | '*' | '!' | '|' | '>') {
        return None;
    }
    let colon = body
        .match_indices(':')
        .map(|(i, _)| i)
        .find(|&i| body[i + 1..].is_empty() || body[i + 1..].starts_with(' '))?;
    let key = body[..colon].trim_end();
    (!key.is_empty() && !key.contains(" #")).then(|| (key.to_owned(), &body[colon + 1..]))
}

/// Quotes an unquoted `decimal(p,s)` so a flow mapping's comma cannot split it.
///
/// In `{ type: decimal(10,2) }` YAML reads `type: decimal(10` and a second key
/// `2)`; written the way users write it, it means the decimal type. The line
/// count is unchanged, so every line number reported later still holds.
pub(super) fn quote_flow_decimals(text: &str) -> std::borrow::Cow<'_, str> {
    static DECIMAL: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(type\s*:\s*)(decimal\s*\(\s*\d+\s*,\s*\d+\s*\))").expect("valid regex")
    });
    DECIMAL.replace_all(text, "$1'$2'")
}
