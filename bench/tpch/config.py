"""Writes datasets_config.yml for the TPC-H tables (`period: none`, the files
tpchgen-cli writes as <table>.csv in landed/)."""
import sys

D = "decimal(15,2)"
TABLES = {
    "region": [("r_regionkey", "int"), ("r_name", "string"), ("r_comment", "string")],
    "nation": [("n_nationkey", "int"), ("n_name", "string"), ("n_regionkey", "int"), ("n_comment", "string")],
    "part": [("p_partkey", "int"), ("p_name", "string"), ("p_mfgr", "string"), ("p_brand", "string"),
             ("p_type", "string"), ("p_size", "int"), ("p_container", "string"), ("p_retailprice", D),
             ("p_comment", "string")],
    "supplier": [("s_suppkey", "int"), ("s_name", "string"), ("s_address", "string"), ("s_nationkey", "int"),
                 ("s_phone", "string"), ("s_acctbal", D), ("s_comment", "string")],
    "partsupp": [("ps_partkey", "int"), ("ps_suppkey", "int"), ("ps_availqty", "int"),
                 ("ps_supplycost", D), ("ps_comment", "string")],
    "customer": [("c_custkey", "int"), ("c_name", "string"), ("c_address", "string"), ("c_nationkey", "int"),
                 ("c_phone", "string"), ("c_acctbal", D), ("c_mktsegment", "string"), ("c_comment", "string")],
    "orders": [("o_orderkey", "int"), ("o_custkey", "int"), ("o_orderstatus", "string"), ("o_totalprice", D),
               ("o_orderdate", "date"), ("o_orderpriority", "string"), ("o_clerk", "string"),
               ("o_shippriority", "int"), ("o_comment", "string")],
    "lineitem": [("l_orderkey", "int"), ("l_partkey", "int"), ("l_suppkey", "int"), ("l_linenumber", "int"),
                 ("l_quantity", D), ("l_extendedprice", D), ("l_discount", D), ("l_tax", D),
                 ("l_returnflag", "string"), ("l_linestatus", "string"), ("l_shipdate", "date"),
                 ("l_commitdate", "date"), ("l_receiptdate", "date"), ("l_shipinstruct", "string"),
                 ("l_shipmode", "string"), ("l_comment", "string")],
}

if __name__ == "__main__":
    out = ["version: 1", "landed_dir: landed", "stage_dir: stage", "datasets:"]
    for name, cols in TABLES.items():
        out += [f"  {name}:", f"    file_pattern: '^{name}\\.csv$'", "    period: none", "    min_quality_score: 0",
                "    max_shrink: 1", "    columns:"]
        out += [f"      {c}: {{ type: '{t}' }}" for c, t in cols]
    open(sys.argv[1], "w").write("\n".join(out) + "\n")
