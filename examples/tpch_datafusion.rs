//! The bench's "DataFusion alone" peer: each model's SQL run by plain
//! DataFusion (default session, no memory limit, none of the pipeline's
//! dialect or writes) over the lake's Parquet files of the same tables, the
//! engine's own limit on this machine. Prints `model milliseconds rows` lines.
//!
//!     cargo run --release --example tpch_datafusion -- <stage_dir>/cleaned <sql/mart>

use std::sync::Arc;
use std::time::Instant;

use datafusion::catalog::MemorySchemaProvider;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (cleaned, sql_dir) = match args.as_slice() {
        [_, cleaned, sql] => (cleaned.clone(), sql.clone()),
        _ => return Err("usage: tpch_datafusion <stage_dir>/cleaned <sql dir>".into()),
    };
    let ctx = SessionContext::new();
    ctx.catalog("datafusion")
        .ok_or("no default catalog")?
        .register_schema("stage", Arc::new(MemorySchemaProvider::new()))?;
    for entry in std::fs::read_dir(&cleaned)? {
        let dir = entry?.path();
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("a table name")?
            .to_owned();
        let path = format!("{}/", dir.display());
        ctx.register_parquet(
            format!("stage.{name}"),
            &path,
            ParquetReadOptions::default(),
        )
        .await?;
    }
    let mut files: Vec<_> = std::fs::read_dir(&sql_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    for file in files {
        let sql = std::fs::read_to_string(&file)?;
        let model = file.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
        let started = Instant::now();
        let rows: usize = match ctx.sql(&sql).await {
            Ok(df) => match df.collect().await {
                Ok(batches) => batches.iter().map(|b| b.num_rows()).sum(),
                Err(e) => {
                    println!("{model} error {e}");
                    continue;
                }
            },
            Err(e) => {
                println!("{model} error {e}");
                continue;
            }
        };
        println!("{model} {} {rows}", started.elapsed().as_millis());
    }
    Ok(())
}
