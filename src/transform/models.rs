//! Analysts' models: `sql/<schema>/<model>.sql`, one SELECT each, target
//! `<schema>.<model>`. Dependencies are read from the SQL itself (FROM, JOIN,
//! subqueries, CTE bodies; CTE names are not tables) and give the run order.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use datafusion::sql::sqlparser::ast::{
    Query, SetExpr, Spanned, Statement, Visit, Visitor, visit_relations,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::audits::{Audit, OnSchemaChange, UnitTest};
use crate::config::{Config, is_sql_identifier};
use crate::ledger::{Input, ModelSpec};

/// Schemas models may write to, in the order they are discovered.
pub const MODEL_SCHEMAS: &[&str] = &["core", "mart"];

/// One SQL model.
#[derive(Debug, Clone)]
pub struct Model {
    pub schema: String,
    pub name: String,
    pub path: PathBuf,
    pub sql: String,
    /// (schema, table) of every table it reads.
    pub deps: BTreeSet<(String, String)>,
    /// sha256 of the normalised SQL: comments, spacing and keyword case are
    /// not changes.
    pub fingerprint: String,
    /// Why its SQL cannot be a model (a syntax error, not one SELECT, a table
    /// not written `schema.table`), with the file, line and column; or what is
    /// wrong with the YAML file beside it.
    pub broken: Option<String>,
    /// The audits declared beside it, run before its rows commit.
    pub audits: Vec<Audit>,
    /// Its unit tests (`pipeline test`).
    pub tests: Vec<UnitTest>,
    /// How its table follows a change of its result's columns.
    pub on_schema_change: OnSchemaChange,
}

impl Model {
    /// `<schema>.<model>`
    pub fn target(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// Why the models cannot run; each names the file(s) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("{}:{line}:{column}: {message}", path.display())]
    At {
        path: PathBuf,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("the models depend on each other in a cycle: {}", files.join(" → "))]
    Cycle { files: Vec<String> },
}

/// Reads every `sql/core/*.sql` and `sql/mart/*.sql` under `sql_dir`.
pub fn discover(sql_dir: &Path) -> Result<Vec<Model>, ModelError> {
    let mut models = Vec::new();
    for schema in MODEL_SCHEMAS {
        let dir = sql_dir.join(schema);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "sql"))
            .collect();
        paths.sort();
        for path in paths {
            let sql = std::fs::read_to_string(&path).map_err(|source| ModelError::Read {
                path: path.clone(),
                source,
            })?;
            let name = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !is_sql_identifier(&name) {
                return Err(ModelError::Invalid {
                    path,
                    message: format!(
                        "`{name}` is not a valid model name: use lower-case letters, digits and _"
                    ),
                });
            }
            // A model that does not parse fails alone (its dependants are
            // skipped), not every model.
            let (deps, mut broken) = match dependencies(&path, &sql) {
                Ok(deps) => (deps, None),
                Err(e) => (BTreeSet::new(), Some(e.to_string())),
            };
            let declared = super::audits::beside(&path).unwrap_or_else(|e| {
                broken.get_or_insert(e);
                Default::default()
            });
            models.push(Model {
                schema: (*schema).to_owned(),
                name,
                path,
                fingerprint: fingerprint(&sql),
                sql,
                deps,
                broken,
                audits: declared.audits,
                tests: declared.tests,
                on_schema_change: declared.on_schema_change,
            });
        }
    }
    Ok(models)
}

/// CTE names anywhere in a statement.
struct CteNames(HashSet<String>);

impl Visitor for CteNames {
    type Break = ();
    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.0.insert(cte.alias.name.value.to_lowercase());
            }
        }
        ControlFlow::Continue(())
    }
}

/// The most operators one model may hold: DataFusion's planning grows with
/// the square of a chain's length (1,000 terms of `+`: 10 s; 20,000 overflow
/// the stack), so a generated model past this is refused before planning.
pub const MAX_OPERATORS: usize = 1000;
/// The deepest parentheses may nest in one model.
pub const MAX_NESTING: usize = 100;

/// Refuses SQL too large to plan in reasonable time and stack, counting
/// tokens (no recursion, so the check itself cannot overflow).
fn not_absurd(path: &Path, sql: &str) -> Result<(), ModelError> {
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(()); // the parser says where
    };
    let (mut operators, mut depth, mut deepest) = (0usize, 0usize, 0usize);
    for t in &tokens {
        match t {
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat => operators += 1,
            Token::Word(w)
                if w.value.eq_ignore_ascii_case("and") || w.value.eq_ignore_ascii_case("or") =>
            {
                operators += 1
            }
            Token::LParen => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            Token::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    let too = if operators > MAX_OPERATORS {
        Some(format!(
            "holds {operators} operators (at most {MAX_OPERATORS})"
        ))
    } else if deepest > MAX_NESTING {
        Some(format!(
            "nests parentheses {deepest} deep (at most {MAX_NESTING})"
        ))
    } else {
        None
    };
    match too {
        Some(why) => Err(ModelError::Invalid {
            path: path.to_owned(),
            message: format!("the model {why}: too large to plan; split it into models or CTEs"),
        }),
        None => Ok(()),
    }
}

/// The tables one model's SQL reads.
pub fn dependencies(path: &Path, sql: &str) -> Result<BTreeSet<(String, String)>, ModelError> {
    not_absurd(path, sql)?;
    let statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| {
        let message = e.to_string();
        match line_col(&message) {
            Some((line, column)) => ModelError::At {
                path: path.to_owned(),
                line,
                column,
                message,
            },
            None => ModelError::Invalid {
                path: path.to_owned(),
                message,
            },
        }
    })?;
    let statement = match statements.as_slice() {
        [s @ Statement::Query(q)] => {
            no_into(path, q)?;
            s
        }
        [_] => {
            return Err(ModelError::Invalid {
                path: path.to_owned(),
                message: "a model is one SELECT query; this file holds another kind of statement"
                    .into(),
            });
        }
        many => {
            return Err(ModelError::Invalid {
                path: path.to_owned(),
                message: format!(
                    "a model is exactly one SELECT; this file holds {} statements",
                    many.len()
                ),
            });
        }
    };
    let mut ctes = CteNames(HashSet::new());
    let _ = statement.visit(&mut ctes);
    let mut deps = BTreeSet::new();
    let mut problem = None;
    let _ = visit_relations(statement, |name| {
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| p.to_string().trim_matches('"').to_lowercase())
            .collect();
        match parts.as_slice() {
            [one] if ctes.0.contains(one) => {}
            [schema, table] => {
                deps.insert((schema.clone(), table.clone()));
            }
            _ => {
                let span = name.span();
                problem.get_or_insert(ModelError::At {
                    path: path.to_owned(),
                    line: span.start.line,
                    column: span.start.column,
                    message: format!(
                        "table `{name}` must be written as <schema>.<table> (stage.<dataset>, core.<model> or mart.<model>)"
                    ),
                });
            }
        }
        ControlFlow::<()>::Continue(())
    });
    match problem {
        Some(p) => Err(p),
        None => Ok(deps),
    }
}

/// `SELECT … INTO t` would create a table of its own beside the model's.
fn no_into(path: &Path, q: &Query) -> Result<(), ModelError> {
    match q.body.as_ref() {
        SetExpr::Select(select) if select.into.is_some() => Err(ModelError::Invalid {
            path: path.to_owned(),
            message: "SELECT … INTO creates a table of its own: remove INTO; the model's \
                      target is named by its file (sql/<schema>/<model>.sql)"
                .into(),
        }),
        _ => Ok(()),
    }
}

/// sha256 of the SQL as sqlparser prints it back (the text itself when it
/// does not parse: then the model fails before anything is recorded).
pub fn fingerprint(sql: &str) -> String {
    use sha2::{Digest, Sha256};
    let normal = match Parser::parse_sql(&GenericDialect {}, sql) {
        Ok(statements) => statements
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(";\n"),
        Err(_) => sql.to_owned(),
    };
    hex::encode(Sha256::digest(normal.as_bytes()))
}

/// What the ledger needs of each model: its target, fingerprint and inputs
/// (each stage table and upstream model it reads, and whether it has periods).
pub fn specs(all: &[Model], config: &Config) -> Vec<ModelSpec> {
    (0..all.len())
        .map(|i| {
            let m = &all[i];
            let inputs = m
                .deps
                .iter()
                .filter_map(|(schema, table)| {
                    let name = format!("{schema}.{table}");
                    if schema == "stage" {
                        let periodic = config
                            .datasets
                            .get(table)
                            .is_none_or(|d| d.period.has_period());
                        return Some(Input {
                            table: name,
                            model: false,
                            periodic,
                        });
                    }
                    let j = all.iter().position(|u| u.target() == name)?;
                    Some(Input {
                        table: name,
                        model: true,
                        periodic: periodic(all, config, j),
                    })
                })
                .collect();
            ModelSpec {
                target: m.target(),
                fingerprint: m.fingerprint.clone(),
                periodic: periodic(all, config, i),
                inputs,
            }
        })
        .collect()
}

/// "... at Line: 3, Column: 7" in sqlparser's messages.
pub fn line_col(message: &str) -> Option<(u64, u64)> {
    let at = message.find("Line: ")?;
    let rest = &message[at + 6..];
    let line: u64 = rest
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let col_at = rest.find("Column: ")?;
    let column: u64 = rest[col_at + 8..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((line, column))
}

/// Checks every dependency is a known table and returns the models in run order.
pub fn order(models: &[Model], config: &Config) -> Result<Vec<usize>, ModelError> {
    let targets: BTreeMap<String, usize> = models
        .iter()
        .enumerate()
        .map(|(i, m)| (m.target(), i))
        .collect();
    for m in models {
        if config.datasets.contains_key(&m.name) {
            return Err(ModelError::Invalid {
                path: m.path.clone(),
                message: format!(
                    "model `{}` has the name of dataset `{}` (stage.{}); rename the file so tables are unambiguous",
                    m.target(),
                    m.name,
                    m.name
                ),
            });
        }
        for (schema, table) in &m.deps {
            let known = match schema.as_str() {
                "stage" => config.datasets.contains_key(table),
                "core" | "mart" => targets.contains_key(&format!("{schema}.{table}")),
                _ => false,
            };
            if !known {
                return Err(ModelError::Invalid {
                    path: m.path.clone(),
                    message: format!(
                        "reads unknown table {schema}.{table} (known: stage.<dataset> for {}, and the models in sql/core, sql/mart)",
                        config
                            .datasets
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
    }
    // Kahn's algorithm; ties broken by discovery order so runs are repeatable.
    let upstream = |i: usize| -> Vec<usize> {
        models[i]
            .deps
            .iter()
            .filter_map(|(s, t)| targets.get(&format!("{s}.{t}")).copied())
            .collect()
    };
    let mut done: Vec<usize> = Vec::new();
    let mut left: Vec<usize> = (0..models.len()).collect();
    while !left.is_empty() {
        let ready: Vec<usize> = left
            .iter()
            .copied()
            .filter(|&i| upstream(i).iter().all(|u| done.contains(u)))
            .collect();
        if ready.is_empty() {
            return Err(ModelError::Cycle {
                files: left
                    .iter()
                    .map(|&i| models[i].path.display().to_string())
                    .collect(),
            });
        }
        done.extend(&ready);
        left.retain(|i| !ready.contains(i));
    }
    Ok(done)
}

/// Every model `i` depends on, directly or not (not including `i`).
pub fn ancestors(models: &[Model], i: usize) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    let mut todo = vec![i];
    while let Some(j) = todo.pop() {
        for (s, t) in &models[j].deps {
            if let Some(k) = models.iter().position(|m| m.schema == *s && m.name == *t)
                && out.insert(k)
            {
                todo.push(k);
            }
        }
    }
    out
}

/// Whether a model reads (directly or through other models) a table with periods.
pub fn periodic(models: &[Model], config: &Config, i: usize) -> bool {
    let reads_periodic_stage = |m: &Model| {
        m.deps.iter().any(|(s, t)| {
            s == "stage"
                && config
                    .datasets
                    .get(t)
                    .is_some_and(|d| d.period.has_period())
        })
    };
    reads_periodic_stage(&models[i])
        || ancestors(models, i)
            .iter()
            .any(|&a| reads_periodic_stage(&models[a]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(schema: &str, name: &str, sql: &str) -> Model {
        let path = PathBuf::from(format!("sql/{schema}/{name}.sql"));
        Model {
            schema: schema.into(),
            name: name.into(),
            deps: dependencies(&path, sql).unwrap(),
            path,
            fingerprint: fingerprint(sql),
            sql: sql.into(),
            broken: None,
            audits: Vec::new(),
            tests: Vec::new(),
            on_schema_change: Default::default(),
        }
    }

    #[test]
    fn a_model_too_large_to_plan_is_refused_by_counting() {
        let p = Path::new("sql/mart/big.sql");
        let chain = |n: usize| {
            let terms: Vec<String> = (0..n).map(|i| format!("x{i}")).collect();
            format!("SELECT {} AS s FROM stage.t", terms.join(" + "))
        };
        assert!(dependencies(p, &chain(500)).is_ok());
        let err = dependencies(p, &chain(20_000)).unwrap_err().to_string();
        assert!(err.contains("19999 operators (at most 1000)"), "{err}");
        let nested = format!(
            "SELECT {}1{} AS s FROM stage.t",
            "(".repeat(300),
            ")".repeat(300)
        );
        let err = dependencies(p, &nested).unwrap_err().to_string();
        assert!(err.contains("nests parentheses 300 deep"), "{err}");
    }

    #[test]
    fn select_into_is_not_a_model() {
        let e = dependencies(
            Path::new("m.sql"),
            "SELECT id INTO core.evil FROM stage.people",
        )
        .unwrap_err();
        assert!(e.to_string().contains("SELECT … INTO"), "{e}");
    }

    #[test]
    fn a_model_that_does_not_parse_is_found_broken_beside_the_others() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("core")).unwrap();
        std::fs::write(dir.path().join("core/bad.sql"), "SELECT FROM WHERE").unwrap();
        std::fs::write(dir.path().join("core/good.sql"), "SELECT 1 AS x").unwrap();
        let found = discover(dir.path()).unwrap();
        assert_eq!(found.len(), 2);
        assert!(
            found[0]
                .broken
                .as_deref()
                .is_some_and(|e| e.contains("bad.sql"))
        );
        assert!(found[1].broken.is_none());
    }

    #[test]
    fn a_models_fingerprint_ignores_comments_spacing_and_keyword_case() {
        let base = fingerprint("SELECT a, count(*) AS n FROM stage.sales GROUP BY a");
        let same = "-- per a\nselect a,\n       count(*) as n\n  from stage.sales  group by a\n";
        assert_eq!(base, fingerprint(same));
        assert_ne!(
            base,
            fingerprint("SELECT a, count(*) AS n FROM stage.sales WHERE a > 0 GROUP BY a")
        );
    }

    #[test]
    fn specs_name_each_input_and_whether_it_has_periods() {
        let all = vec![
            model(
                "core",
                "c",
                "SELECT s.id FROM stage.sales s JOIN stage.shops h ON h.id = s.id",
            ),
            model("mart", "m", "SELECT id FROM core.c"),
            model("mart", "h", "SELECT id FROM stage.shops"),
        ];
        let specs = specs(&all, &config());
        let inputs: Vec<(&str, bool, bool)> = specs[0]
            .inputs
            .iter()
            .map(|i| (i.table.as_str(), i.model, i.periodic))
            .collect();
        assert_eq!(
            inputs,
            [("stage.sales", false, true), ("stage.shops", false, false)]
        );
        assert_eq!(specs[1].inputs[0].table, "core.c");
        assert!(specs[1].inputs[0].model && specs[1].periodic);
        assert!(!specs[2].periodic);
        let chosen = crate::ledger::with_dependants(&specs, &BTreeSet::from([0]));
        assert_eq!(chosen, BTreeSet::from([0, 1]));
    }

    fn config() -> Config {
        Config::from_yaml(
            "version: 1\nlanded_dir: l\nstage_dir: s\ndatasets:\n  sales:\n    file_pattern: '^s_(?P<period>\\d{4}-\\d{2})\\.csv$'\n    period: month\n    columns:\n      id: { type: int }\n  shops:\n    file_pattern: '^shops\\.csv$'\n    period: none\n    columns:\n      id: { type: int }\n",
        )
        .unwrap()
    }

    #[test]
    fn dependencies_cover_joins_subqueries_and_ctes_but_not_cte_names() {
        let sql = "WITH big AS (SELECT * FROM stage.sales WHERE id > (SELECT max(id) FROM core.x))
                   SELECT * FROM big JOIN stage.shops s ON s.id = big.id
                   WHERE big.id IN (SELECT id FROM mart.y)";
        let deps = dependencies(Path::new("m.sql"), sql).unwrap();
        let names: Vec<String> = deps.iter().map(|(s, t)| format!("{s}.{t}")).collect();
        assert_eq!(names, ["core.x", "mart.y", "stage.sales", "stage.shops"]);
    }

    #[test]
    fn unqualified_tables_and_non_selects_are_rejected_with_location() {
        let err = dependencies(Path::new("sql/core/a.sql"), "SELECT 1\nFROM   sales").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("sql/core/a.sql:2:8: table `sales`"),
            "{err}"
        );
        let err = dependencies(Path::new("a.sql"), "DELETE FROM stage.sales").unwrap_err();
        assert!(err.to_string().contains("one SELECT"), "{err}");
        let err = dependencies(Path::new("a.sql"), "SELECT 1; SELECT 2").unwrap_err();
        assert!(err.to_string().contains("2 statements"), "{err}");
        let err = dependencies(Path::new("a.sql"), "SELECT FROM WHERE").unwrap_err();
        assert!(err.to_string().starts_with("a.sql:1:"), "{err}");
    }

    #[test]
    fn order_runs_upstream_first_and_finds_cycles() {
        let c = config();
        let models = vec![
            model("mart", "top", "SELECT * FROM core.clean"),
            model("core", "clean", "SELECT * FROM stage.sales"),
        ];
        let o = order(&models, &c).unwrap();
        assert_eq!(o, [1, 0]);
        assert!(
            periodic(&models, &c, 0),
            "mart.top reads sales through core.clean"
        );
        let cyc = vec![
            model("core", "a", "SELECT * FROM core.b"),
            model("core", "b", "SELECT * FROM core.a"),
        ];
        let err = order(&cyc, &c).unwrap_err().to_string();
        assert!(
            err.contains("cycle")
                && err.contains("sql/core/a.sql")
                && err.contains("sql/core/b.sql"),
            "{err}"
        );
    }

    #[test]
    fn unknown_tables_and_name_collisions_are_rejected() {
        let c = config();
        let err = order(&[model("core", "a", "SELECT * FROM stage.nope")], &c)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown table stage.nope"), "{err}");
        let err = order(&[model("core", "sales", "SELECT * FROM stage.sales")], &c)
            .unwrap_err()
            .to_string();
        assert!(err.contains("has the name of dataset `sales`"), "{err}");
        let full = vec![model("core", "s", "SELECT * FROM stage.shops")];
        assert!(
            !periodic(&full, &c, 0),
            "reads only a period-less table: full refresh"
        );
    }
}
