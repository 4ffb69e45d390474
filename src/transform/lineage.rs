//! Column-level lineage, read from the models' DataFusion plans (the same
//! plans transform runs, planned against the config without a database): for
//! each model column, the columns it is computed from one hop back (another
//! model's or a stage table's), and down to the stage columns, with how each
//! is used — copied, computed, aggregated — and, per model, the columns used
//! only to filter or join. Stage columns carry their dataset's declared type
//! and rules. `pipeline lineage` prints it as text, `--json` or `--format dot`.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};
use serde::Serialize;

use super::{TransformError, plan_all, sql_dir};
use crate::config::{ColumnRule, Config};

/// How a column is used on its way into a model column; the strongest use
/// along the way wins (a copy of an aggregate is aggregated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Usage {
    Copied,
    Computed,
    Aggregated,
}

/// A column of a table: `(table, column)`.
pub(super) type TableColumn = (String, String);

/// `(table, column)` → how it is used.
type Sources = BTreeMap<(String, String), Usage>;

/// One source of a model column.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    pub table: String,
    pub column: String,
    pub usage: Usage,
    /// Stage columns: the declared type and rules (`min: 0`…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ColumnLineage {
    pub column: String,
    /// The strongest use of any source.
    pub usage: Usage,
    /// What the model reads: stage or other models' columns.
    pub from: Vec<Source>,
    /// Down to the stage tables, through the models in between.
    pub stage: Vec<Source>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelLineage {
    pub model: String,
    pub file: String,
    pub columns: Vec<ColumnLineage>,
    /// Columns used to filter or join (`_data_period = $period`, join keys).
    pub filters: Vec<Source>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub models: Vec<ModelLineage>,
}

/// The lineage of every model (or `model`, or its `column`).
pub async fn run(
    config: &Config,
    model: Option<&str>,
    column: Option<&str>,
) -> Result<Report, TransformError> {
    let (all, planned) = plan_all(config, &sql_dir(config))
        .await
        .map_err(|p| TransformError::Usage(p.message))?;
    if let Some(name) = model
        && !all.iter().any(|m| m.target() == name || m.name == name)
    {
        return Err(TransformError::Usage(format!(
            "no model `{name}` (models: {})",
            (all.iter().map(|m| m.target()))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    // Each model's columns down to stage, filled in dependency order.
    let mut to_stage: BTreeMap<String, BTreeMap<String, Sources>> = BTreeMap::new();
    let mut models = Vec::new();
    for (i, df) in &planned {
        let m = &all[*i];
        let plan = df.logical_plan();
        let mut columns = Vec::new();
        let mut down = BTreeMap::new();
        for (at, field) in plan.schema().fields().iter().enumerate() {
            let from = column_sources(plan, at);
            let stage = through_models(&from, &to_stage);
            down.insert(field.name().clone(), stage.clone());
            columns.push(ColumnLineage {
                column: field.name().clone(),
                usage: from.values().copied().max().unwrap_or(Usage::Computed),
                from: listed(config, &from),
                stage: listed(config, &stage),
            });
        }
        to_stage.insert(m.target(), down);
        models.push(ModelLineage {
            model: m.target(),
            file: m.path.display().to_string(),
            columns,
            filters: listed(config, &filters(plan)),
        });
    }
    models.retain(|l| model.is_none_or(|n| l.model == n || l.model.ends_with(&format!(".{n}"))));
    if let Some(c) = column {
        for l in &mut models {
            l.columns.retain(|x| x.column == c);
        }
        if models.iter().all(|l| l.columns.is_empty()) {
            return Err(TransformError::Usage(format!(
                "no column `{c}` in {}",
                model.unwrap_or("any model")
            )));
        }
    }
    Ok(Report { models })
}

/// Sources that are models' columns replaced by those models' own stage sources.
fn through_models(
    from: &Sources,
    to_stage: &BTreeMap<String, BTreeMap<String, Sources>>,
) -> Sources {
    let mut out = Sources::new();
    for ((table, column), usage) in from {
        match to_stage.get(table).and_then(|cols| cols.get(column)) {
            Some(below) => {
                for (k, u) in below {
                    merge(&mut out, k.clone(), (*u).max(*usage));
                }
            }
            None => merge(&mut out, (table.clone(), column.clone()), *usage),
        }
    }
    out
}

fn merge(into: &mut Sources, key: (String, String), usage: Usage) {
    let slot = into.entry(key).or_insert(usage);
    *slot = (*slot).max(usage);
}

/// Sources as listed in the report, stage columns with what the config declares.
fn listed(config: &Config, sources: &Sources) -> Vec<Source> {
    (sources.iter())
        .map(|((table, column), usage)| Source {
            table: table.clone(),
            column: column.clone(),
            usage: *usage,
            declared: declared(config, table, column),
        })
        .collect()
}

/// A stage column's declared type and rules, e.g. `float, min: 0`.
fn declared(config: &Config, table: &str, column: &str) -> Option<String> {
    let dataset = table.strip_prefix("stage.")?;
    let c = config.datasets.get(dataset)?.columns.get(column)?;
    let rules: Vec<String> = (ColumnRule::ALL.into_iter())
        .filter_map(|r| r.value(c).map(|v| format!("{}: {v}", r.key())))
        .collect();
    Some(rules.join(", "))
}

/// Where output column `i` of `plan` comes from.
fn column_sources(plan: &LogicalPlan, i: usize) -> Sources {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let name = scan.projected_schema.field(i).name().clone();
            Sources::from([((scan.table_name.to_string(), name), Usage::Copied)])
        }
        LogicalPlan::Projection(p) => expr_sources(&p.expr[i], &p.input, Usage::Copied),
        LogicalPlan::Aggregate(a) => {
            let groups = a.group_expr.len();
            match a.group_expr.get(i) {
                Some(g) => expr_sources(g, &a.input, Usage::Copied),
                None => expr_sources(&a.aggr_expr[i - groups], &a.input, Usage::Aggregated),
            }
        }
        LogicalPlan::Window(w) => {
            let n = w.input.schema().fields().len();
            match i < n {
                true => column_sources(&w.input, i),
                false => expr_sources(&w.window_expr[i - n], &w.input, Usage::Aggregated),
            }
        }
        LogicalPlan::Join(j) => {
            let left = j.left.schema().fields().len();
            match j.join_type {
                JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark if i < left => {
                    column_sources(&j.left, i)
                }
                JoinType::RightSemi | JoinType::RightAnti => column_sources(&j.right, i),
                _ if i < left => column_sources(&j.left, i),
                _ => column_sources(&j.right, i - left),
            }
        }
        LogicalPlan::Union(u) => {
            let mut out = Sources::new();
            for input in &u.inputs {
                for (k, usage) in column_sources(input, i) {
                    merge(&mut out, k, usage);
                }
            }
            out
        }
        other => {
            let inputs = other.inputs();
            match inputs.as_slice() {
                // Filter, Sort, Limit, Distinct, SubqueryAlias…: the same columns.
                [one] if one.schema().fields().len() == other.schema().fields().len() => {
                    column_sources(one, i)
                }
                _ => {
                    let mut out = Sources::new();
                    for input in inputs {
                        for c in 0..input.schema().fields().len() {
                            for (k, _) in column_sources(input, c) {
                                merge(&mut out, k, Usage::Computed);
                            }
                        }
                    }
                    out
                }
            }
        }
    }
}

/// Whether `e` only renames or retypes one column.
fn plain(e: &Expr) -> bool {
    match e {
        Expr::Column(_) => true,
        Expr::Alias(a) => plain(&a.expr),
        Expr::Cast(c) => plain(&c.expr),
        Expr::TryCast(c) => plain(&c.expr),
        // The dialect's guard on a float result column.
        Expr::ScalarFunction(f) if f.name() == "finite" => f.args.first().is_some_and(plain),
        _ => false,
    }
}

/// The sources of expression `e` over `input`: its columns, and the output
/// of any subquery in it.
fn expr_sources(e: &Expr, input: &LogicalPlan, usage: Usage) -> Sources {
    let usage = if plain(e) {
        usage
    } else {
        usage.max(Usage::Computed)
    };
    let mut out = Sources::new();
    for c in e.column_refs() {
        // An outer query's column (a correlated subquery) is not in `input`.
        let Ok(at) = input.schema().index_of_column(c) else {
            continue;
        };
        for (k, u) in column_sources(input, at) {
            merge(&mut out, k, u.max(usage));
        }
    }
    // count(*): an aggregate of rows, not of a column.
    if out.is_empty() && usage == Usage::Aggregated {
        for table in scanned(input) {
            merge(&mut out, (table, "*".into()), Usage::Aggregated);
        }
    }
    let _ = e.apply(|x| {
        if let Expr::ScalarSubquery(sq) = x {
            for (k, u) in column_sources(&sq.subquery, 0) {
                merge(&mut out, k, u.max(Usage::Computed));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

/// The tables a plan scans.
fn scanned(plan: &LogicalPlan) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            out.insert(scan.table_name.to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

/// The columns a plan's joins hold equal (`ON a.x = b.y`, or `a.x = b.y` in
/// a WHERE), each side traced to the one table column it copies: what lets
/// `pipeline trace` follow a row from one side of a join to the other.
pub(super) fn equi_joins(plan: &LogicalPlan) -> Vec<(TableColumn, TableColumn)> {
    let one = |e: &Expr, over: &LogicalPlan| -> Option<(String, String)> {
        if !plain(e) {
            return None;
        }
        let c = e.column_refs().into_iter().next()?;
        let at = over.schema().index_of_column(c).ok()?;
        let sources = column_sources(over, at);
        let mut copied = sources.into_iter().filter(|(_, u)| *u == Usage::Copied);
        match (copied.next(), copied.next()) {
            (Some((k, _)), None) => Some(k),
            _ => None,
        }
    };
    let mut out = Vec::new();
    let mut equalities = |predicate: &Expr, over: &LogicalPlan| {
        for conj in datafusion::logical_expr::utils::split_conjunction(predicate) {
            if let Expr::BinaryExpr(b) = conj
                && b.op == datafusion::logical_expr::Operator::Eq
                && let (Some(l), Some(r)) = (one(&b.left, over), one(&b.right, over))
            {
                out.push((l, r));
            }
        }
    };
    let mut pairs = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::Join(j) => {
                for (l, r) in &j.on {
                    if let (Some(a), Some(b)) = (one(l, &j.left), one(r, &j.right)) {
                        pairs.push((a, b));
                    }
                }
                if let Some(f) = &j.filter {
                    equalities(f, node);
                }
            }
            LogicalPlan::Filter(f) => equalities(&f.predicate, &f.input),
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    pairs.extend(out);
    pairs
}

/// The columns a plan filters or joins on, traced to their tables.
fn filters(plan: &LogicalPlan) -> Sources {
    let mut out = Sources::new();
    let mut add = |e: &Expr, over: &LogicalPlan| {
        for c in e.column_refs() {
            if let Ok(at) = over.schema().index_of_column(c) {
                for (k, _) in column_sources(over, at) {
                    merge(&mut out, k, Usage::Copied);
                }
            }
        }
    };
    let _ = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::Filter(f) => add(&f.predicate, &f.input),
            LogicalPlan::Join(j) => {
                for (l, r) in &j.on {
                    add(l, &j.left);
                    add(r, &j.right);
                }
                if let Some(f) = &j.filter {
                    add(f, node);
                }
            }
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

impl Report {
    /// `model.column ← source (usage)` lines, each with its stage sources.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for m in &self.models {
            out.push_str(&format!("{} ({})\n", m.model, m.file));
            for c in &m.columns {
                out.push_str(&format!("  {} [{}]\n", c.column, usage(c.usage)));
                for s in &c.from {
                    out.push_str(&format!(
                        "    ← {}.{} ({})\n",
                        s.table,
                        s.column,
                        usage(s.usage)
                    ));
                }
                let hops: BTreeSet<String> = c
                    .from
                    .iter()
                    .map(|s| format!("{}.{}", s.table, s.column))
                    .collect();
                for s in c
                    .stage
                    .iter()
                    .filter(|s| !hops.contains(&format!("{}.{}", s.table, s.column)))
                {
                    out.push_str(&format!(
                        "    ⇐ {}.{} ({}){}\n",
                        s.table,
                        s.column,
                        usage(s.usage),
                        s.declared
                            .as_ref()
                            .map(|d| format!(" [{d}]"))
                            .unwrap_or_default()
                    ));
                }
            }
            if !m.filters.is_empty() {
                let f: Vec<String> = m
                    .filters
                    .iter()
                    .map(|s| format!("{}.{}", s.table, s.column))
                    .collect();
                out.push_str(&format!("  filtered or joined on: {}\n", f.join(", ")));
            }
        }
        out
    }

    /// A Graphviz digraph: an edge from each source column to the model column.
    pub fn dot(&self) -> String {
        let mut out = String::from("digraph lineage {\n  rankdir=LR;\n");
        for m in &self.models {
            for c in &m.columns {
                for s in &c.from {
                    out.push_str(&format!(
                        "  \"{}.{}\" -> \"{}.{}\" [label=\"{}\"];\n",
                        s.table,
                        s.column,
                        m.model,
                        c.column,
                        usage(s.usage)
                    ));
                }
            }
        }
        out.push_str("}\n");
        out
    }
}

pub fn usage(u: Usage) -> &'static str {
    match u {
        Usage::Copied => "copied",
        Usage::Computed => "computed",
        Usage::Aggregated => "aggregated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strongest_use_wins() {
        let mut s = Sources::new();
        merge(&mut s, ("t".into(), "a".into()), Usage::Copied);
        merge(&mut s, ("t".into(), "a".into()), Usage::Aggregated);
        merge(&mut s, ("t".into(), "a".into()), Usage::Computed);
        assert_eq!(s[&("t".into(), "a".into())], Usage::Aggregated);
    }
}
