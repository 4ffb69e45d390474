//! The TPC-H models of `make bench-tpch` (bench/tpch/sql/mart) run through
//! transform over small tables where each has rows to return. The tables are
//! inserted by SQL, not loaded: the lake cannot account for them, so this is
//! also the reader of stage tables changed outside the pipeline.

use crate::support::*;

/// Small TPC-H tables made by SQL so every one of the ten queries has rows:
/// customers without orders (q13), orders whose lines sum past 300 (q18),
/// 'BUILDING' customers, 'ASIA', green parts, PROMO types, MAIL and SHIP lines.
const TPCH_ROWS: &str = "
INSERT INTO stage.region (r_regionkey, r_name, r_comment)
  SELECT i, (ARRAY['AFRICA','AMERICA','ASIA','EUROPE','MIDDLE EAST'])[i + 1], 'r' FROM generate_series(0, 4) i;
INSERT INTO stage.nation (n_nationkey, n_name, n_regionkey, n_comment)
  SELECT i, 'NATION ' || i, i % 5, 'n' FROM generate_series(0, 24) i;
INSERT INTO stage.part (p_partkey, p_name, p_mfgr, p_brand, p_type, p_size, p_container, p_retailprice, p_comment)
  SELECT i, (ARRAY['green','red','blue','forest green'])[i % 4 + 1] || ' part ' || i, 'M', 'Brand#' || i % 5,
         (ARRAY['PROMO BRUSHED','STANDARD PLATED','ECONOMY'])[i % 3 + 1], i % 50, 'BOX', 900 + i * 1.01, 'p'
    FROM generate_series(1, 200) i;
INSERT INTO stage.supplier (s_suppkey, s_name, s_address, s_nationkey, s_phone, s_acctbal, s_comment)
  SELECT i, 'Supplier#' || i, 'a' || i, i % 25, 'ph' || i, i * 13.37 - 500, 's' FROM generate_series(1, 20) i;
INSERT INTO stage.partsupp (ps_partkey, ps_suppkey, ps_availqty, ps_supplycost, ps_comment)
  SELECT p, (p + k) % 20 + 1, 100 + p, (p * 7 + k) % 1000 + 0.25, 'ps'
    FROM generate_series(1, 200) p, generate_series(0, 3) k;
INSERT INTO stage.customer (c_custkey, c_name, c_address, c_nationkey, c_phone, c_acctbal, c_mktsegment, c_comment)
  SELECT i, 'Customer#' || i, 'a' || i, i % 25, 'ph' || i, i * 3.17 - 100,
         (ARRAY['BUILDING','AUTOMOBILE','MACHINERY','HOUSEHOLD','FURNITURE'])[i % 5 + 1], 'c'
    FROM generate_series(1, 150) i;
INSERT INTO stage.orders (o_orderkey, o_custkey, o_orderstatus, o_totalprice, o_orderdate, o_orderpriority,
                          o_clerk, o_shippriority, o_comment)
  SELECT o, 3 * (o % 50) + 1 + o % 2, (ARRAY['O','F'])[o % 2 + 1], o * 10.25, DATE '1992-01-01' + ((o * 37) % 2405)::int,
         (ARRAY['1-URGENT','2-HIGH','3-MEDIUM','4-NOT SPECIFIED','5-LOW'])[o % 5 + 1], 'Clerk#' || o % 9, 0,
         CASE WHEN o % 7 = 0 THEN 'special packages requests' ELSE 'plain' END
    FROM generate_series(1, 1500) o;
INSERT INTO stage.lineitem (l_orderkey, l_partkey, l_suppkey, l_linenumber, l_quantity, l_extendedprice,
                            l_discount, l_tax, l_returnflag, l_linestatus, l_shipdate, l_commitdate,
                            l_receiptdate, l_shipinstruct, l_shipmode, l_comment)
  SELECT k, p, (p + ln % 4) % 20 + 1, ln, qty, round(qty * (90 + p * 0.1), 2), disc, tax,
         CASE WHEN ship + rcv <= DATE '1995-06-17' THEN (ARRAY['R','A'])[(k + ln) % 2 + 1] ELSE 'N' END,
         CASE WHEN ship > DATE '1995-06-17' THEN 'O' ELSE 'F' END,
         ship, od + ((k * 3 + ln) % 91 + 30)::int, ship + rcv, 'NONE',
         (ARRAY['REG AIR','AIR','RAIL','SHIP','TRUCK','MAIL','FOB'])[(k + ln) % 7 + 1], 'l'
    FROM (SELECT o_orderkey AS k, o_orderdate AS od, ln, (o_orderkey * 13 + ln * 7) % 200 + 1 AS p,
                 CASE WHEN o_orderkey % 97 = 0 THEN 50 ELSE (o_orderkey + ln * 11) % 50 + 1 END AS qty,
                 ((o_orderkey + ln) % 11) / 100.0 AS disc, ((o_orderkey + 2 * ln) % 9) / 100.0 AS tax,
                 o_orderdate + ((o_orderkey + ln * 5) % 121 + 1)::int AS ship, ((o_orderkey + ln) % 30 + 1)::int AS rcv
            FROM stage.orders, generate_series(1, o_orderkey % 7 + 1) ln) AS x;";

/// The ten models of round 3, which these tables give rows.
const ORIGINAL_TEN: &[&str] = &[
    "mart.q01", "mart.q03", "mart.q05", "mart.q06", "mart.q09", "mart.q10", "mart.q12", "mart.q13",
    "mart.q14", "mart.q18",
];

/// Every one of the 21 TPC-H models runs; the ten of round 3 write rows.
#[test]
fn the_tpch_models_run_over_tables_changed_outside_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("datasets_config.yml");
    let made = std::process::Command::new("python3")
        .arg(repo().join("bench/tpch/config.py"))
        .arg(&config)
        .status()
        .unwrap();
    assert!(made.success());
    let models = dir.path().join("sql/mart");
    std::fs::create_dir_all(&models).unwrap();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(repo().join("bench/tpch/sql/mart")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, models.join(path.file_name().unwrap())).unwrap();
        names.push(format!(
            "mart.{}",
            path.file_stem().unwrap().to_str().unwrap()
        ));
    }
    names.sort();
    assert_eq!(names.len(), 21, "{names:?}");
    let db = TestDb::new("in_postgres_tpch");
    assert_eq!(pipeline(dir.path(), Some(&db.url), &["migrate"]).code, 0);
    db.client().batch_execute(TPCH_ROWS).unwrap();
    let run: Run = command(dir.path(), Some(&db.url), &["--json", "transform"])
        .output()
        .unwrap()
        .into();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("read from PostgreSQL"),
        "rows no load wrote are read from PostgreSQL, and the log says so: {}",
        run.stderr
    );
    let out = run.json();
    let mut c = db.client();
    for table in &names {
        let m = (out["models"].as_array().unwrap().iter())
            .find(|m| m["model"] == table.as_str())
            .unwrap();
        assert_eq!(m["status"], "done", "{m}");
        let n: i64 = c
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0);
        // The new eleven need values these small tables do not all have.
        if ORIGINAL_TEN.contains(&table.as_str()) {
            assert!(n > 0, "{table} has no rows");
        }
    }
}
