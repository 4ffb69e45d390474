//! Every check of `Config::from_yaml`, on good and bad input.

use super::*;

const GOOD: &str = r#"version: 1
landed_dir: data/landed
stage_dir: data/stage
datasets:
  citizens:
    file_pattern: '^citizens_(?P<period>\d{4}-\d{2})\.(csv|xlsx)$'
    period: month
    format: csv
    headers: strict
    primary_key: [citizen_id]
    min_quality_score: 80
    columns:
      citizen_id: { type: int, required: true, unique: true }
      email:      { type: string, regex: '^[^@\s]+@[^@\s]+\.[^@\s]+$' }
      amount:     { type: float, min: 0 }
      balance:    { type: 'decimal(12,2)', max: 1000000 }
      signup:     { type: date, format: '%Y-%m-%d', min: '2000-01-01' }
      seen_at:    { type: timestamp, format: '%Y-%m-%d %H:%M:%S' }
      active:     { type: bool }
      status:     { type: string, allowed: [active, closed] }
  regions:
    file_pattern: '^regions\.csv$'
    period: none
    primary_key: [region_code]
    columns:
      region_code: { type: string, required: true }
      region_name: { type: string }
"#;

fn problems(yaml: &str) -> Vec<Problem> {
    match Config::from_yaml(yaml) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        Err(other) => panic!("expected check problems, got {other}"),
        Ok(_) => panic!("expected problems, config was accepted"),
    }
}

fn one_problem(yaml: &str) -> Problem {
    let mut p = problems(yaml);
    assert_eq!(p.len(), 1, "expected one problem, got {p:#?}");
    p.remove(0)
}

fn parse_error(yaml: &str) -> String {
    match Config::from_yaml(yaml) {
        Err(ConfigError::Parse { source, .. }) => source.to_string(),
        Err(other) => panic!("expected a parse error, got {other}"),
        Ok(_) => panic!("expected a parse error, config was accepted"),
    }
}

fn replace(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "fixture lacks {from:?}");
    GOOD.replacen(from, to, 1)
}

#[test]
fn good_config_loads_with_types_order_and_defaults() {
    let c = Config::from_yaml(GOOD).unwrap();
    let names: Vec<_> = c.datasets.keys().map(String::as_str).collect();
    assert_eq!(names, ["citizens", "regions"]);
    let ds = &c.datasets["citizens"];
    let cols: Vec<_> = ds.columns.keys().map(String::as_str).collect();
    assert_eq!(
        cols,
        [
            "citizen_id",
            "email",
            "amount",
            "balance",
            "signup",
            "seen_at",
            "active",
            "status"
        ]
    );
    assert_eq!(
        ds.columns["balance"].ty,
        ColumnType::Decimal {
            precision: 12,
            scale: 2
        }
    );
    assert_eq!(ds.columns["amount"].min, Some(Bound::Int(0)));
    let regions = &c.datasets["regions"];
    assert_eq!(regions.period, PeriodKind::None);
    assert_eq!(regions.headers, HeaderMode::Strict);
    assert_eq!(regions.min_quality_score, 80);
    assert_eq!(regions.delimiter, ',');
    assert_eq!(regions.format, None);
}

#[test]
fn unknown_key_names_key_path_and_line() {
    let msg = parse_error(&replace(
        "email:      { type: string, regex:",
        "email:      { type: string, regx:",
    ));
    assert!(msg.contains("unknown field `regx`"), "{msg}");
    assert!(msg.contains("citizens.columns.email"), "{msg}");
    assert!(msg.contains("line 14"), "{msg}");
}

#[test]
fn drift_is_checked_where_it_is_written() {
    let with = |drift: &str| {
        replace(
            "    headers: strict\n",
            &format!("    headers: strict\n    drift: {drift}\n"),
        )
    };
    let ok = Config::from_yaml(&with("{ row_count: 0.5 }")).unwrap();
    let d = ok.datasets["citizens"].drift.clone().unwrap();
    assert_eq!((d.window, d.row_count, d.null_share), (6, Some(0.5), None));
    assert_eq!(d.severity, DriftSeverity::Error);
    let msg = parse_error(&with("{ row_count: 0.5, windw: 3 }"));
    assert!(
        msg.contains("unknown field `windw`") && msg.contains("line"),
        "{msg}"
    );
    let said: Vec<String> = problems(&with("{ window: 0, null_share: 1.5 }"))
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert!(
        said.iter().any(|p| p.contains("window must be at least 1")),
        "{said:?}"
    );
    assert!(
        said.iter()
            .any(|p| p.contains("null_share 1.5 is outside 0..=1")),
        "{said:?}"
    );
    let none = problems(&with("{ severity: warn }"));
    assert!(none[0].to_string().contains("names no measure"), "{none:?}");
    let whole = GOOD.replace(
        "    period: none\n",
        "    period: none\n    drift: { row_count: 0.5 }\n",
    );
    assert!(problems(&whole)[0].to_string().contains("`period: none`"));
}

#[test]
fn unknown_dataset_key_is_rejected() {
    let msg = parse_error(&replace(
        "    headers: strict\n",
        "    headers: strict\n    header_row: 2\n",
    ));
    assert!(msg.contains("unknown field `header_row`"), "{msg}");
    assert!(msg.contains("datasets.citizens"), "{msg}");
}

#[test]
fn unknown_type_is_rejected_with_choices() {
    let msg = parse_error(&replace(
        "amount:     { type: float",
        "amount:     { type: money",
    ));
    assert!(msg.contains("unknown type `money`"), "{msg}");
    assert!(msg.contains("decimal(p,s)"), "{msg}");
    assert!(msg.contains("line 15"), "{msg}");
}

#[test]
fn bad_decimal_precision_is_rejected() {
    let msg = parse_error(&replace("'decimal(12,2)'", "'decimal(2,5)'"));
    assert!(msg.contains("scale <= precision"), "{msg}");
}

#[test]
fn unknown_period_and_header_mode_are_rejected() {
    assert!(parse_error(&replace("period: month", "period: weekly")).contains("weekly"));
    assert!(parse_error(&replace("headers: strict", "headers: loose")).contains("loose"));
    assert!(parse_error(&replace("format: csv", "format: xml")).contains("xml"));
}

#[test]
fn pattern_must_compile() {
    let p = one_problem(&replace(r"(csv|xlsx)$'", r"(csv|xlsx$'"));
    assert_eq!(p.dataset.as_deref(), Some("citizens"));
    assert_eq!(p.key.as_deref(), Some("file_pattern"));
    assert_eq!(p.line, Some(6));
    assert!(p.message.contains("not a valid regex"), "{}", p.message);
}

#[test]
fn periodic_dataset_needs_period_group() {
    let p = one_problem(&replace("(?P<period>", "("));
    assert_eq!(p.key.as_deref(), Some("file_pattern"));
    assert!(
        p.message.contains("no named group `period`"),
        "{}",
        p.message
    );
    assert!(p.message.contains("period: month"), "{}", p.message);
}

#[test]
fn period_none_must_not_have_period_group() {
    let p = one_problem(&replace(
        r"'^regions\.csv$'",
        r"'^regions_(?P<period>\d+)\.csv$'",
    ));
    assert_eq!(p.dataset.as_deref(), Some("regions"));
    assert!(p.message.contains("period: none"), "{}", p.message);
}

#[test]
fn dataset_name_must_be_identifier() {
    let p = one_problem(&replace("  regions:\n", "  Regions-2:\n"));
    assert_eq!(p.dataset.as_deref(), Some("Regions-2"));
    assert!(p.message.contains("not a valid name"), "{}", p.message);
    assert_eq!(p.line, Some(21));
}

#[test]
fn column_name_must_be_identifier_and_not_reserved() {
    let p = one_problem(&replace("      active:", "      \"Active Flag\":"));
    assert_eq!(p.column.as_deref(), Some("Active Flag"));
    assert!(p.message.contains("not a valid column name"));
    let p = one_problem(&replace("      active:", "      _data_period:"));
    assert!(p.message.contains("reserved"), "{}", p.message);
    for name in ["_errors", "_line", "_source_file", "_shape", "__raw__x"] {
        let p = one_problem(&replace("      active:", &format!("      {name}:")));
        assert_eq!(p.column.as_deref(), Some(name));
        assert!(p.message.contains("reserved"), "{name}: {}", p.message);
    }
    for name in ["ctid", "xmin", "tableoid"] {
        let p = one_problem(&replace("      active:", &format!("      {name}:")));
        assert!(p.message.contains("system column"), "{name}: {}", p.message);
    }
    // Other names starting with _ stay the analysts'.
    assert!(Config::from_yaml(&replace("      active:", "      _id:")).is_ok());
}

#[test]
fn identifier_rule() {
    assert!(is_sql_identifier("a"));
    assert!(is_sql_identifier("_x9"));
    assert!(is_sql_identifier(&"a".repeat(63)));
    assert!(!is_sql_identifier(&"a".repeat(64)));
    assert!(!is_sql_identifier("9a"));
    assert!(!is_sql_identifier("A"));
    assert!(!is_sql_identifier("a-b"));
    assert!(!is_sql_identifier(""));
    assert!(!is_sql_identifier("a\"; drop table x; --"));
}

#[test]
fn min_max_on_string_is_rejected() {
    let p = one_problem(&replace(
        "status:     { type: string,",
        "status:     { type: string, min: 3,",
    ));
    assert_eq!(p.column.as_deref(), Some("status"));
    assert_eq!(p.key.as_deref(), Some("min"));
    assert_eq!(p.line, Some(20));
    assert!(p.message.contains("not string"), "{}", p.message);
    let p = one_problem(&replace(
        "active:     { type: bool }",
        "active:     { type: bool, max: 1 }",
    ));
    assert!(p.message.contains("not bool"), "{}", p.message);
}

#[test]
fn regex_on_int_is_rejected() {
    let p = one_problem(&replace(
        "citizen_id: { type: int,",
        "citizen_id: { type: int, regex: '^\\d+$',",
    ));
    assert_eq!(p.column.as_deref(), Some("citizen_id"));
    assert_eq!(p.key.as_deref(), Some("regex"));
    assert!(p.message.contains("not int"), "{}", p.message);
}

#[test]
fn invalid_column_regex_is_rejected() {
    let p = one_problem(&replace(r"'^[^@\s]+@[^@\s]+\.[^@\s]+$'", r"'^[a-z'"));
    assert_eq!(p.key.as_deref(), Some("regex"));
    assert!(p.message.contains("not a valid regex"), "{}", p.message);
}

#[test]
fn format_on_int_is_rejected() {
    let p = one_problem(&replace(
        "citizen_id: { type: int,",
        "citizen_id: { type: int, format: '%Y',",
    ));
    assert_eq!(p.key.as_deref(), Some("format"));
    assert!(p.message.contains("not int"), "{}", p.message);
}

#[test]
fn invalid_chrono_format_is_rejected() {
    let p = one_problem(&replace("format: '%Y-%m-%d %H:%M:%S'", "format: '%Y-%Q'"));
    assert_eq!(p.column.as_deref(), Some("seen_at"));
    assert!(
        p.message.contains("not a valid chrono format"),
        "{}",
        p.message
    );
}

#[test]
fn bounds_fit_their_type() {
    let p = one_problem(&replace("min: '2000-01-01'", "min: '2000-02-30'"));
    assert_eq!(p.column.as_deref(), Some("signup"));
    assert!(p.message.contains("not a date"), "{}", p.message);
    let p = one_problem(&replace("min: '2000-01-01'", "min: 2000"));
    assert!(p.message.contains("quoted date"), "{}", p.message);
    let p = one_problem(&replace(
        "min: '2000-01-01'",
        "min: '2000-01-01', max: '1999-12-31'",
    ));
    assert_eq!(p.key.as_deref(), Some("max"));
    assert!(p.message.contains("is before min"), "{}", p.message);
    assert!(
        Config::from_yaml(&replace(
            "min: '2000-01-01'",
            "min: '2000-01-01', max: '2000-01-01'"
        ))
        .is_ok(),
        "equal bounds let one day pass"
    );
    let p = one_problem(&replace(
        "amount:     { type: float, min: 0 }",
        "amount:     { type: float, min: zero }",
    ));
    assert!(p.message.contains("must be a number"), "{}", p.message);
    let p = one_problem(&replace(
        "amount:     { type: float, min: 0 }",
        "amount:     { type: float, min: 5, max: 1 }",
    ));
    assert!(p.message.contains("below min"), "{}", p.message);
}

/// A number bound is exact in its column's type or refused: an int bound
/// keeps every digit, a decimal bound fits the column's precision and scale,
/// and a number YAML would round must be quoted.
#[test]
fn number_bounds_are_exact_or_refused() {
    let id = "citizen_id: { type: int, required: true, unique: true }";
    let c = Config::from_yaml(&replace(
        id,
        &id.replace("true }", "true, min: 9007199254740993 }"),
    ))
    .unwrap();
    let col = &c.datasets["citizens"].columns["citizen_id"];
    assert_eq!(col.min, Some(Bound::Int(9_007_199_254_740_993)));
    let p = one_problem(&replace(
        id,
        &id.replace("true }", "true, max: 9223372036854775808 }"),
    ));
    assert!(
        p.message.contains("beyond a 64-bit integer"),
        "{}",
        p.message
    );

    let balance = "balance:    { type: 'decimal(12,2)', max: 1000000 }";
    let with = |max: &str| replace(balance, &balance.replace("1000000", max));
    let big = "balance:    { type: 'decimal(20,2)', max: 12345678901234567.89 }";
    let p = one_problem(&replace(balance, big));
    assert!(p.message.contains("quote it"), "{}", p.message);
    let quoted = big.replace("12345678901234567.89", "'12345678901234567.89'");
    let c = Config::from_yaml(&replace(balance, &quoted)).unwrap();
    let max = c.datasets["citizens"].columns["balance"].max.clone();
    assert_eq!(max, Some(Bound::Text("12345678901234567.89".into())));
    for (max, says) in [
        ("1.005", "3 decimal places"),
        ("'1.005'", "3 decimal places"),
        ("12345678901", "11 digits before the point"),
        ("'1e3'", "not a plain decimal"),
    ] {
        let p = one_problem(&with(max));
        assert!(p.message.contains(says), "{max}: {}", p.message);
    }
    let p = one_problem(&replace(
        balance,
        "balance: { type: 'decimal(38,38)', max: 1 }",
    ));
    assert!(p.message.contains("holds 0"), "{}", p.message);
    assert!(Config::from_yaml(&with("'1.50'")).is_ok());
    assert!(Config::from_yaml(&with("-9999999999.99")).is_ok());
    let p = one_problem(&with("'5', min: '6'"));
    assert!(p.message.contains("below min"), "{}", p.message);
}

#[test]
fn allowed_wholly_outside_the_bounds_is_refused() {
    let amount = "amount:     { type: float, min: 0 }";
    let p = one_problem(&replace(
        amount,
        "amount: { type: float, min: 0, allowed: [-1, -2] }",
    ));
    assert_eq!(p.key.as_deref(), Some("allowed"));
    assert!(p.message.contains("outside min/max"), "{}", p.message);
    let ok = replace(amount, "amount: { type: float, min: 0, allowed: [-1, 2] }");
    assert!(Config::from_yaml(&ok).is_ok());
}

/// Config that no file could ever pass is refused where it is written.
#[test]
fn config_that_can_never_pass_is_refused() {
    let signup = "format: '%Y-%m-%d', min: '2000-01-01'";
    for (from, to, says) in [
        (signup, "format: '%Y'", "no a month (%m), a day (%d)"),
        (
            "format: '%Y-%m-%d %H:%M:%S'",
            "format: '%Y-%m-%d'",
            "no an hour (%H) for a timestamp",
        ),
        (signup, "min: '2000-1-1'", "with every digit"),
        (
            "landed_dir: data/landed",
            "landed_dir: 's3://'",
            "names no bucket",
        ),
        (
            "stage_dir: data/stage",
            "stage_dir: s3:///x",
            "names no bucket",
        ),
        (
            "stage_dir: data/stage",
            "stage_dir: data/stage\nlimits: { header_max_bytes: 0 }",
            "must be above 0",
        ),
    ] {
        let p = one_problem(&replace(from, to));
        assert!(p.message.contains(says), "{to}: {}", p.message);
    }
    for fine in ["format: '%d %b %Y'", "format: '%j/%Y'", "format: '%F'"] {
        assert!(Config::from_yaml(&replace(signup, fine)).is_ok(), "{fine}");
    }
    let stamp = "format: '%Y-%m-%d %H:%M:%S'";
    for fine in [
        "format: '%s'",
        "format: '%FT%T'",
        "format: '%Y-%m-%d %I:%M %p'",
    ] {
        assert!(Config::from_yaml(&replace(stamp, fine)).is_ok(), "{fine}");
    }
}

#[test]
fn allowed_values_fit_their_type() {
    let p = one_problem(&replace(
        "allowed: [active, closed]",
        "allowed: [active, 7]",
    ));
    assert_eq!(p.key.as_deref(), Some("allowed"));
    assert!(p.message.contains("quote it"), "{}", p.message);
    let p = one_problem(&replace(
        "active:     { type: bool }",
        "active:     { type: bool, allowed: [true] }",
    ));
    assert!(p.message.contains("not bool"), "{}", p.message);
    let p = one_problem(&replace("allowed: [active, closed]", "allowed: []"));
    assert!(p.message.contains("empty"), "{}", p.message);
    let p = one_problem(&replace(
        "citizen_id: { type: int,",
        "citizen_id: { type: int, allowed: [1.5],",
    ));
    assert!(p.message.contains("not a int"), "{}", p.message);
}

#[test]
fn primary_key_must_be_declared_once() {
    let p = one_problem(&replace(
        "primary_key: [citizen_id]",
        "primary_key: [citizen_id, ssn]",
    ));
    assert_eq!(p.key.as_deref(), Some("primary_key"));
    assert_eq!(p.line, Some(10));
    assert!(
        p.message.contains("`ssn` is not a declared column"),
        "{}",
        p.message
    );
    let p = one_problem(&replace(
        "primary_key: [citizen_id]",
        "primary_key: [citizen_id, citizen_id]",
    ));
    assert!(p.message.contains("listed twice"), "{}", p.message);
}

#[test]
fn min_quality_score_in_range() {
    let p = one_problem(&replace("min_quality_score: 80", "min_quality_score: 101"));
    assert_eq!(p.key.as_deref(), Some("min_quality_score"));
    assert!(
        parse_error(&replace("min_quality_score: 80", "min_quality_score: -1"))
            .contains("min_quality_score")
    );
}

#[test]
fn delimiter_must_be_ascii_and_differ_from_quote() {
    let p = one_problem(&replace(
        "    headers: strict\n",
        "    headers: strict\n    delimiter: '\"'\n",
    ));
    assert_eq!(p.key.as_deref(), Some("quote"));
    let p = one_problem(&replace(
        "    headers: strict\n",
        "    headers: strict\n    delimiter: '§'\n",
    ));
    assert_eq!(p.key.as_deref(), Some("delimiter"));
}

#[test]
fn version_and_empty_sections() {
    let p = one_problem(&replace("version: 1", "version: 2"));
    assert_eq!(p.key.as_deref(), Some("version"));
    assert_eq!(p.line, Some(1));
    let p = problems("version: 1\nlanded_dir: ''\nstage_dir: s\ndatasets: {}\n");
    let keys: Vec<_> = p.iter().filter_map(|p| p.key.as_deref()).collect();
    assert_eq!(keys, ["landed_dir", "datasets"]);
}

#[test]
fn overlapping_patterns_are_rejected_with_a_witness() {
    let yaml = replace(r"'^regions\.csv$'", r"'^citizens_.*\.csv$'");
    let p = one_problem(&yaml);
    assert_eq!(p.dataset.as_deref(), Some("regions"));
    assert!(
        p.message.contains("overlaps dataset `citizens`"),
        "{}",
        p.message
    );
    assert!(p.message.contains("citizens_"), "{}", p.message);
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = replace("primary_key: [citizen_id]", "primary_key: [nope]").replace(
        "status:     { type: string,",
        "status:     { type: string, min: 1,",
    );
    assert_eq!(problems(&yaml).len(), 2);
}

#[test]
fn error_display_names_file_dataset_column_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("datasets_config.yml");
    std::fs::write(
        &path,
        replace(
            "status:     { type: string,",
            "status:     { type: string, max: 3,",
        ),
    )
    .unwrap();
    let msg = Config::load(&path).unwrap_err().to_string();
    assert!(msg.contains("datasets_config.yml"), "{msg}");
    assert!(
        msg.contains("line 20: dataset `citizens`: column `status`: `max`:"),
        "{msg}"
    );
}

#[test]
fn missing_file_is_a_read_error() {
    let err = Config::load(Path::new("/nonexistent/datasets_config.yml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("/nonexistent/datasets_config.yml"));
}

#[test]
fn keys_written_twice_are_problems_naming_both_lines() {
    let yaml = GOOD.replace(
        "      amount:     { type: float, min: 0 }\n",
        "      amount:     { type: float, min: 0 }\n      email:      { type: string }\n",
    ) + "  regions:\n    file_pattern: '^r2\\.csv$'\n    period: none\n    columns:\n      a: { type: int }\n";
    let found = problems(&yaml);
    let email = found
        .iter()
        .find(|p| p.key.as_deref() == Some("email"))
        .unwrap_or_else(|| panic!("the second email column is reported: {found:#?}"));
    assert_eq!(email.line, Some(16));
    assert_eq!(email.dataset.as_deref(), Some("citizens"));
    assert_eq!(email.column.as_deref(), Some("email"));
    assert!(
        email.message.contains("line 14 and line 16"),
        "{}",
        email.message
    );
    let regions = found
        .iter()
        .find(|p| p.key.as_deref() == Some("regions"))
        .expect("the second regions dataset is reported");
    assert!(
        regions.message.contains("under `datasets`"),
        "{}",
        regions.message
    );
    assert!(
        regions.message.contains("line 22 and line 29"),
        "{}",
        regions.message
    );
}

#[test]
fn equal_keys_in_different_mappings_and_block_scalars_are_not_duplicates() {
    // `region_code` is a column of two datasets, `period` appears at two levels,
    // and the description's text holds `period:` twice: none of these is a repeat.
    let yaml = GOOD.replace(
        "  citizens:\n",
        "  citizens:\n    description: |\n      period: monthly\n      period: again\n",
    );
    assert_eq!(text::duplicate_keys(&yaml), Vec::new());
    Config::from_yaml(&yaml).expect("accepted");
}

#[test]
fn an_unquoted_decimal_in_a_flow_mapping_means_the_decimal_type() {
    let yaml = GOOD.replace("type: 'decimal(12,2)'", "type: decimal(12, 2)");
    let config = Config::from_yaml(&yaml).expect("accepted");
    assert_eq!(
        config.datasets["citizens"].columns["balance"].ty,
        ColumnType::Decimal {
            precision: 12,
            scale: 2
        }
    );
    let cut = ColumnType::try_from("decimal(10".to_owned()).unwrap_err();
    assert!(cut.contains("write it quoted"), "{cut}");
}

#[test]
fn an_allowed_value_that_is_not_a_scalar_names_the_key_and_what_fits() {
    let yaml = GOOD.replace("allowed: [active, closed]", "allowed: [1, yes, null]");
    let found = problems(&yaml);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].key.as_deref(), Some("allowed"));
    assert_eq!(found[0].dataset.as_deref(), Some("citizens"));
    assert_eq!(found[0].column.as_deref(), Some("status"));
    assert_eq!(found[0].line, Some(20));
    assert!(found[0].message.contains("text, a number or true/false"));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Arbitrary text is a config or an error, never a panic.
        #[test]
        fn any_text_loads_or_is_refused(text in "\\PC{0,200}") {
            loaded_or_said_why(&text)?;
        }

        /// The good config with one character replaced, inserted or removed
        /// anywhere: still a config or an error, never a panic.
        #[test]
        fn a_mutated_config_loads_or_is_refused(
            at in 0usize..GOOD.len(),
            op in 0u8..3,
            c in prop_oneof![Just(':'), Just('\''), Just('"'), Just('\n'), Just(' '), Just('{'), Just('['), Just('-'), Just('#'), Just('9'), Just('\t'), Just('é')],
        ) {
            let mut text = GOOD.to_owned();
            let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            match op {
                0 => text.insert(at, c),
                1 => { if at < text.len() { text.remove(at); } }
                _ => { if at < text.len() { text.remove(at); } text.insert(at, c); }
            }
            loaded_or_said_why(&text)?;
        }
    }

    /// A config that loads has a dataset with a column, each with its rules
    /// fingerprint; a refusal says why in words.
    fn loaded_or_said_why(text: &str) -> Result<(), TestCaseError> {
        match Config::from_yaml(text) {
            Ok(c) => {
                prop_assert!(!c.datasets.is_empty());
                for ds in c.datasets.values() {
                    prop_assert!(!ds.columns.is_empty());
                    prop_assert_eq!(crate::config::Rules::of(ds).fingerprint().len(), 64);
                }
            }
            Err(e) => prop_assert!(e.to_string().trim().len() > 10, "{}", e),
        }
        Ok(())
    }
}

#[test]
fn incremental_datasets_take_their_period_from_the_folder() {
    let incremental = replace(
        "    file_pattern: '^citizens_(?P<period>\\d{4}-\\d{2})\\.(csv|xlsx)$'\n    period: month\n",
        "    file_pattern: '^citizens\\.csv$'\n    period: day\n    incremental: { changed_rows: append }\n",
    );
    let config = Config::from_yaml(&incremental).expect("a valid incremental dataset");
    assert_eq!(
        config.datasets["citizens"].incremental,
        Some(Incremental {
            changed_rows: ChangedRows::Append
        })
    );
    let defaulted = incremental.replace("{ changed_rows: append }", "{}");
    let config = Config::from_yaml(&defaulted).unwrap();
    assert_eq!(
        config.datasets["citizens"]
            .incremental
            .as_ref()
            .map(|i| i.changed_rows),
        Some(ChangedRows::Ignore)
    );
    // A period group would be a second, competing period.
    let p = one_problem(&incremental.replace(
        "'^citizens\\.csv$'",
        "'^citizens_(?P<period>\\d{4}-\\d{2}-\\d{2})\\.csv$'",
    ));
    assert!(p.message.contains("acquisition folder"), "{p:?}");
    let p = one_problem(&incremental.replace("period: day", "period: month"));
    assert!(p.message.contains("needs `period: day`"), "{p:?}");
    let p = one_problem(&incremental.replace("    primary_key: [citizen_id]\n", ""));
    assert!(p.message.contains("needs `primary_key`"), "{p:?}");
}

#[test]
fn the_engine_is_in_process_unless_a_ballista_scheduler_is_named() {
    assert_eq!(
        Config::from_yaml(GOOD).unwrap().engine,
        crate::config::Engine::InProcess
    );
    let c = Config::from_yaml(&replace(
        "stage_dir: data/stage\n",
        "stage_dir: data/stage\nengine: ballista://scheduler:50050\n",
    ))
    .unwrap();
    assert_eq!(
        c.engine,
        crate::config::Engine::Ballista("scheduler:50050".into())
    );
    let bad = replace(
        "stage_dir: data/stage\n",
        "stage_dir: data/stage\nengine: spark://x:7077\n",
    );
    let text = match Config::from_yaml(&bad) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a spark engine was accepted"),
    };
    assert!(text.contains("ballista://host:port"), "{text}");
}
