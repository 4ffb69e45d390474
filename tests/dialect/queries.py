"""The queries of the dialect corpus: what analysts write every day over typed
stage tables (arithmetic, decimals, floats, strings, dates, NULLs, casts,
aggregates, windows, joins, set operations, subqueries), adapted from
DataFusion's sqllogictest SELECTs and PostgreSQL's regression queries, plus the
TPC-H queries over tiny TPC-H tables. generate.py runs each in DuckDB (the
reference) and writes corpus.slt.

Each entry is (name, sql). Names are unique and stable: differences.yml and the
dialect page refer to them.
"""

T = "stage.t"
U = "stage.u"
B = "stage.big"


def scalar(prefix, exprs, table=T, key="id"):
    return [
        (f"{prefix}_{n:02d}", f"SELECT {key}, {e} AS x FROM {table}")
        for n, e in enumerate(exprs, 1)
    ]


INTEGER = [
    "i + j", "i - j", "i * j", "i * 2 + j", "-i", "abs(i)", "i % 3", "i % j",
    "j % 2", "i / 2", "-i / 2", "i / j", "i + 1.5", "i * 0.1", "i = j", "i < j",
    "i >= 10", "i BETWEEN 0 AND 10", "i NOT BETWEEN 0 AND 10", "i IN (1, 3, 5)",
    "i NOT IN (1, 3)", "i IS DISTINCT FROM j", "i IS NOT DISTINCT FROM 10",
    "greatest(i, j)", "least(i, j)", "coalesce(i, j, 0)", "nullif(i, 10)",
    "CASE WHEN i > 0 THEN 'pos' WHEN i < 0 THEN 'neg' ELSE 'zero' END",
    "CASE i WHEN 10 THEN 'ten' WHEN 0 THEN 'nil' END", "i + NULL",
    "power(i, 2)", "sign(i)", "gcd(i, 12)", "lcm(i, 4)", "i * i * i",
    "(i + j) * (i - j)", "i / 2 * 2 + i % 2", "CAST(i AS DOUBLE) / 4",
    "CAST(i AS DECIMAL(20, 2)) / 4", "i::bigint + j::bigint",
]

DECIMAL = [
    "d + 1", "d - d", "d * 2", "d * d", "d / 3", "d / 7", "-d", "abs(d)",
    "round(d)", "round(d, 1)", "round(d, -1)", "floor(d)", "ceil(d)", "trunc(d)",
    "d + f", "d * 1.5", "d > 10", "d = 12.5", "d / 100", "d % 3",
    "CAST(d AS BIGINT)", "CAST(d AS DOUBLE)", "CAST(d AS DECIMAL(14, 4))",
    "CAST(d AS VARCHAR)", "d + i", "d * j", "coalesce(d, 0)",
    "CASE WHEN d IS NULL THEN -1 ELSE d END", "d / 99999999.99", "100.00 * d / 3",
    "sign(d)", "greatest(d, 0)", "least(d, 0)", "round(d / 3, 2)", "d / 2 / 3",
    "d * 0.01", "CAST(d AS DECIMAL(12, 2)) / CAST(3 AS DECIMAL(12, 2))",
]

FLOAT = [
    "f * 2", "f / 4", "f + 0.1", "f - f", "-f", "abs(f)", "round(f)", "round(f, 1)",
    "floor(f)", "ceil(f)", "trunc(f)", "sqrt(abs(f))", "power(f, 2)", "exp(f / 100)",
    "ln(abs(f) + 1)", "log10(abs(f) + 1)", "f > 1", "f = 1.5", "CAST(f AS BIGINT)",
    "CAST(f AS DECIMAL(20, 4))", "CAST(f AS VARCHAR)", "f * i", "f / 3 * 3",
    "coalesce(f, -1)", "0.1 + 0.2 = 0.3", "0.1::double + 0.2::double", "round(2.5)",
    "round(-2.5)", "round(CAST(2.5 AS DOUBLE))", "cbrt(f)", "sin(f)", "cos(f)",
    "atan(f)", "pi() * f", "degrees(f)", "radians(f)", "f < 0 OR f IS NULL",
]

STRING = [
    "upper(s)", "lower(s)", "length(s)", "char_length(s)", "octet_length(s)",
    "substr(s, 2, 3)", "substring(s FROM 2)", "s || '-x'", "concat(s, '-', id)",
    "concat_ws('/', s, grp)", "trim(s)", "ltrim(s)", "rtrim(s)", "replace(s, 'a', 'A')",
    "left(s, 2)", "right(s, 2)", "lpad(s, 8, '*')", "rpad(s, 8, '*')", "reverse(s)",
    "strpos(s, 'a')", "split_part(s, ' ', 1)", "starts_with(s, 'a')", "s LIKE 'a%'",
    "s LIKE '%a%'", "s ILIKE 'A%'", "s NOT LIKE '%e%'", "s LIKE 'a\\%b%' ESCAPE '\\'",
    "regexp_replace(s, '[aeiou]', '_', 'g')", "regexp_like(s, '^[a-z]+$')",
    "s ~ '^[A-Z]'", "s = ''", "s IS NULL", "coalesce(s, '(none)')", "nullif(s, '')",
    "repeat(s, 2)", "initcap(s)", "ascii(s)", "chr(65 + id)", "md5(s)",
    "translate(s, 'ab', 'xy')", "s < 'b'", "s > grp", "upper(s) = 'APPLE'",
    "length(trim(s)) = 0", "CAST(id AS VARCHAR) || s", "btrim(s, ' p')",
    "s IN ('apple', 'x')", "grp || ':' || coalesce(s, '')", "to_hex(id * 255)",
]

DATE = [
    "dt + INTERVAL '1 day'", "dt + INTERVAL '1 month'", "dt - INTERVAL '1 month'",
    "dt + INTERVAL '1 year'", "date_trunc('month', dt)", "date_trunc('year', dt)",
    "extract(year FROM dt)", "extract(month FROM dt)", "extract(day FROM dt)",
    "extract(dow FROM dt)", "extract(doy FROM dt)", "extract(quarter FROM dt)",
    "date_part('week', dt)", "dt < DATE '2024-01-01'", "dt BETWEEN DATE '2024-01-01' AND DATE '2024-06-30'",
    "CAST(dt AS VARCHAR)", "dt = DATE '2024-02-29'", "CAST('2024-03-01' AS DATE) - dt",
    "dt + 30", "date_trunc('day', ts)", "date_trunc('hour', ts)",
    "date_trunc('month', ts)", "extract(hour FROM ts)", "extract(minute FROM ts)",
    "extract(second FROM ts)", "extract(epoch FROM ts)", "CAST(ts AS DATE)",
    "CAST(ts AS VARCHAR)", "ts + INTERVAL '90 minutes'", "ts - INTERVAL '1 day'",
    "ts > TIMESTAMP '2024-06-01 00:00:00'", "CAST(dt AS TIMESTAMP)",
    "ts = CAST(dt AS TIMESTAMP)", "CAST(ts AS DATE) = dt",
    "make_date(2024, 2, 29)", "to_char(dt, '%Y-%m')",
    "strftime(dt, '%Y-%m')", "date_trunc('week', dt)",
]

CAST = [
    "CAST(s AS VARCHAR)", "CAST(b AS VARCHAR)", "CAST(b AS INT)", "CAST(id AS DOUBLE) / 3",
    "CAST(id AS DECIMAL(10, 3)) / 3", "CAST('12' AS BIGINT) + id", "CAST(id AS BOOLEAN)",
    "CAST(1.99 AS BIGINT)", "CAST(-1.99 AS BIGINT)", "CAST(2.5 AS INT)", "CAST(3.5 AS INT)",
    "CAST(f * 10 AS INT)", "TRY_CAST(s AS BIGINT)", "TRY_CAST(s AS DATE)",
    "CAST(d AS INT)", "CAST(i AS SMALLINT)",
]

BOOL = [
    "b AND i > 0", "b OR i > 0", "NOT b", "b IS NULL", "b IS TRUE", "b IS NOT FALSE",
    "b = true", "b AND NULL", "b OR NULL", "CASE WHEN b THEN 1 ELSE 0 END",
    "coalesce(b, false)", "b <> (i > 0)",
]

AGGREGATE = [
    ("count", "SELECT count(*), count(i), count(DISTINCT i), count(s), count(DISTINCT grp) FROM stage.t"),
    ("sum_int", "SELECT sum(i), sum(j) FROM stage.t"),
    ("sum_div_count", "SELECT sum(i) / count(*) AS q FROM stage.t"),
    ("sum_div_count_small", "SELECT sum(x) / count(*) AS q FROM (VALUES (CAST(1 AS BIGINT)), (CAST(2 AS BIGINT))) AS v(x)"),
    ("sum_dec", "SELECT sum(d), avg(d), min(d), max(d) FROM stage.t"),
    ("sum_float", "SELECT sum(f), min(f), max(f) FROM stage.t"),
    ("avg_int", "SELECT avg(i), avg(j) FROM stage.t"),
    ("avg_float", "SELECT avg(f) FROM stage.t"),
    ("group_count", "SELECT grp, count(*), count(i), sum(i) FROM stage.t GROUP BY grp"),
    ("group_avg", "SELECT grp, avg(d), avg(f), avg(i) FROM stage.t GROUP BY grp"),
    ("group_minmax", "SELECT grp, min(s), max(s), min(dt), max(ts) FROM stage.t GROUP BY grp"),
    ("having", "SELECT grp, count(*) AS n FROM stage.t GROUP BY grp HAVING count(*) > 2"),
    ("having_sum", "SELECT grp, sum(d) AS total FROM stage.t GROUP BY grp HAVING sum(d) > 0"),
    ("filter", "SELECT grp, count(*) FILTER (WHERE b), sum(i) FILTER (WHERE i > 0) FROM stage.t GROUP BY grp"),
    ("distinct_sum", "SELECT sum(DISTINCT i), count(DISTINCT d) FROM stage.t"),
    ("bool_aggs", "SELECT grp, bool_and(b), bool_or(b) FROM stage.t GROUP BY grp"),
    ("string_agg_ordered", "SELECT grp, string_agg(s, ',' ORDER BY id) FROM stage.t GROUP BY grp"),
    ("string_agg_ordered_desc", "SELECT string_agg(CAST(id AS VARCHAR), '-' ORDER BY id DESC) FROM stage.t"),
    ("array_agg_ordered", "SELECT grp, array_agg(id ORDER BY id) FROM stage.t GROUP BY grp"),
    ("stddev", "SELECT stddev_samp(f), var_samp(d) FROM stage.t WHERE f BETWEEN -10 AND 10"),
    ("stddev_pop", "SELECT grp, stddev_pop(i), var_pop(i) FROM stage.t WHERE i BETWEEN -100 AND 100 GROUP BY grp"),
    ("median", "SELECT median(i) FROM stage.t WHERE i BETWEEN -100 AND 100"),
    ("count_empty", "SELECT count(*), sum(i), max(s) FROM stage.t WHERE id < 0"),
    ("group_empty", "SELECT grp, count(*) FROM stage.t WHERE id < 0 GROUP BY grp"),
    ("group_expr", "SELECT i % 2 AS parity, count(*) FROM stage.t GROUP BY i % 2"),
    ("group_two", "SELECT grp, b, count(*) FROM stage.t GROUP BY grp, b"),
    ("group_date", "SELECT date_trunc('year', dt) AS y, count(*) FROM stage.t GROUP BY 1"),
    ("rollup", "SELECT grp, b, count(*) FROM stage.t GROUP BY ROLLUP (grp, b)"),
    ("cube", "SELECT grp, b, count(*) FROM stage.t GROUP BY CUBE (grp, b)"),
    ("grouping_sets", "SELECT grp, b, sum(i) FROM stage.t GROUP BY GROUPING SETS ((grp), (b), ())"),
    ("distinct", "SELECT DISTINCT grp FROM stage.t"),
    ("distinct_two", "SELECT DISTINCT grp, b FROM stage.t"),
    ("count_case", "SELECT sum(CASE WHEN b THEN 1 ELSE 0 END) AS yes, sum(CASE WHEN NOT b THEN 1 END) AS no FROM stage.t"),
    ("min_max_str", "SELECT min(s), max(s) FROM stage.t"),
    ("avg_dec_group", "SELECT grp, avg(d) * 2 AS twice FROM stage.t GROUP BY grp"),
    ("share_of_total", "SELECT grp, sum(d) / (SELECT sum(d) FROM stage.t) AS share FROM stage.t GROUP BY grp"),
    ("share_of_total_aliased", "SELECT grp, sum(d) / (SELECT sum(d) AS total FROM stage.t) AS share FROM stage.t GROUP BY grp"),
    ("approx_distinct_exact", "SELECT count(DISTINCT s) FROM stage.t"),
    ("first_by_order", "SELECT grp, first_value(s ORDER BY id) FROM stage.t GROUP BY grp"),
    ("sum_overflow_big", "SELECT sum(n) FROM stage.big"),
    ("sum_times_big", "SELECT sum(n * 1000000000000) FROM stage.big WHERE id > 2"),
    ("avg_big", "SELECT avg(n) FROM stage.big"),
    ("count_distinct_null", "SELECT count(DISTINCT b) FROM stage.t"),
]

WINDOW = [
    ("row_number", "SELECT id, row_number() OVER (ORDER BY id) FROM stage.t"),
    ("row_number_part", "SELECT id, row_number() OVER (PARTITION BY grp ORDER BY id) FROM stage.t"),
    ("rank", "SELECT id, rank() OVER (ORDER BY d) FROM stage.t"),
    ("dense_rank", "SELECT id, dense_rank() OVER (ORDER BY s) FROM stage.t"),
    ("rank_desc_nulls", "SELECT id, rank() OVER (ORDER BY i DESC NULLS LAST) FROM stage.t"),
    ("rank_nulls_first", "SELECT id, rank() OVER (ORDER BY i NULLS FIRST) FROM stage.t"),
    ("lag", "SELECT id, lag(i) OVER (ORDER BY id) FROM stage.t"),
    ("lead", "SELECT id, lead(i, 2) OVER (ORDER BY id) FROM stage.t"),
    ("lag_default", "SELECT id, lag(i, 1, 0) OVER (ORDER BY id) FROM stage.t"),
    ("first_value", "SELECT id, first_value(i) OVER (PARTITION BY grp ORDER BY id) FROM stage.t"),
    ("last_value", "SELECT id, last_value(i) OVER (PARTITION BY grp ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) FROM stage.t"),
    ("running_sum", "SELECT id, sum(i) OVER (ORDER BY id) FROM stage.t"),
    ("running_sum_part", "SELECT id, sum(d) OVER (PARTITION BY grp ORDER BY id) FROM stage.t"),
    ("moving_avg", "SELECT id, avg(d) OVER (ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM stage.t"),
    ("count_over", "SELECT id, count(*) OVER (PARTITION BY grp) FROM stage.t"),
    ("sum_over_all", "SELECT id, sum(i) OVER () FROM stage.t"),
    ("ntile", "SELECT id, ntile(3) OVER (ORDER BY id) FROM stage.t"),
    ("percent_rank", "SELECT id, percent_rank() OVER (ORDER BY id) FROM stage.t"),
    ("cume_dist", "SELECT id, cume_dist() OVER (ORDER BY grp) FROM stage.t"),
    ("max_over_range", "SELECT id, max(f) OVER (ORDER BY id ROWS BETWEEN 2 PRECEDING AND 2 FOLLOWING) FROM stage.t"),
    ("min_over", "SELECT id, min(s) OVER (PARTITION BY grp) FROM stage.t"),
    ("nth_value", "SELECT id, nth_value(id, 2) OVER (PARTITION BY grp ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) FROM stage.t"),
    ("rank_ties", "SELECT id, rank() OVER (PARTITION BY grp ORDER BY i) FROM stage.t"),
    ("window_in_expr", "SELECT id, i - avg(i) OVER (PARTITION BY grp) FROM stage.t WHERE i BETWEEN -100 AND 100"),
    ("lag_ignore_nulls", "SELECT id, lag(i) IGNORE NULLS OVER (ORDER BY id) FROM stage.t"),
    ("window_filter_after", "SELECT * FROM (SELECT id, row_number() OVER (PARTITION BY grp ORDER BY id) AS rn FROM stage.t) AS x WHERE rn = 1"),
    ("running_count_range", "SELECT id, count(*) OVER (ORDER BY grp RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) FROM stage.t"),
    ("window_two", "SELECT id, rank() OVER (ORDER BY grp), sum(id) OVER (PARTITION BY b) FROM stage.t"),
]

JOIN = [
    ("inner", "SELECT t.id, u.name FROM stage.t JOIN stage.u ON t.i = u.k"),
    ("left", "SELECT t.id, u.name FROM stage.t LEFT JOIN stage.u ON t.i = u.k"),
    ("right", "SELECT t.id, u.name FROM stage.t RIGHT JOIN stage.u ON t.i = u.k"),
    ("full", "SELECT t.id, u.name FROM stage.t FULL JOIN stage.u ON t.i = u.k"),
    ("full_using", "SELECT id, t.grp, u.name FROM stage.t FULL JOIN stage.u USING (id)"),
    ("full_coalesce", "SELECT coalesce(t.id, u.id) AS k, t.grp, u.name FROM stage.t FULL JOIN stage.u ON t.id = u.id"),
    ("using", "SELECT id, grp, name FROM stage.t JOIN stage.u USING (id)"),
    ("cross_filter", "SELECT t.id, u.id AS uid FROM stage.t CROSS JOIN stage.u WHERE t.id + u.id = 7"),
    ("non_equi", "SELECT t.id, u.id AS uid FROM stage.t JOIN stage.u ON t.d > u.v AND t.id < 4"),
    ("self", "SELECT a.id, b.id AS bid FROM stage.t AS a JOIN stage.t AS b ON a.grp = b.grp AND a.id < b.id"),
    ("left_filter_on", "SELECT t.id, u.name FROM stage.t LEFT JOIN stage.u ON t.id = u.id AND u.k > 0"),
    ("left_filter_where", "SELECT t.id, u.name FROM stage.t LEFT JOIN stage.u ON t.id = u.id WHERE u.k > 0"),
    ("exists", "SELECT id FROM stage.t WHERE EXISTS (SELECT 1 FROM stage.u WHERE u.k = t.i)"),
    ("not_exists", "SELECT id FROM stage.t WHERE NOT EXISTS (SELECT 1 FROM stage.u WHERE u.k = t.i)"),
    ("in_sub", "SELECT id FROM stage.t WHERE i IN (SELECT k FROM stage.u)"),
    ("not_in_sub_nulls", "SELECT id FROM stage.t WHERE i NOT IN (SELECT k FROM stage.u)"),
    ("not_in_sub_no_nulls", "SELECT id FROM stage.t WHERE i NOT IN (SELECT k FROM stage.u WHERE k IS NOT NULL)"),
    ("scalar_sub", "SELECT id, (SELECT max(k) FROM stage.u) AS m FROM stage.t"),
    ("correlated_scalar", "SELECT id, (SELECT count(*) FROM stage.u WHERE u.k = t.i) AS n FROM stage.t"),
    ("correlated_avg", "SELECT id FROM stage.t WHERE d > (SELECT avg(d) FROM stage.t AS x WHERE x.grp = t.grp)"),
    ("join_agg", "SELECT u.name, count(t.id) FROM stage.u LEFT JOIN stage.t ON t.i = u.k GROUP BY u.name"),
    ("join_three", "SELECT a.id, u.name, b.id AS bid FROM stage.t AS a JOIN stage.u ON a.id = u.id JOIN stage.t AS b ON b.i = u.k"),
    ("semi_dup", "SELECT u.id FROM stage.u WHERE u.k IN (SELECT i FROM stage.t)"),
    ("anti_left", "SELECT t.id FROM stage.t LEFT JOIN stage.u ON t.i = u.k WHERE u.id IS NULL"),
    ("join_null_keys", "SELECT t.id, u.id AS uid FROM stage.t JOIN stage.u ON t.j IS NOT DISTINCT FROM u.k"),
    ("lateral_like", "SELECT t.id, x.m FROM stage.t JOIN (SELECT k, max(v) AS m FROM stage.u GROUP BY k) AS x ON x.k = t.i"),
    ("natural", "SELECT id, grp, name FROM stage.t NATURAL JOIN stage.u"),
]

SETOPS = [
    ("union", "SELECT i FROM stage.t UNION SELECT k FROM stage.u"),
    ("union_all", "SELECT i FROM stage.t UNION ALL SELECT k FROM stage.u"),
    ("intersect", "SELECT i FROM stage.t INTERSECT SELECT k FROM stage.u"),
    ("except", "SELECT i FROM stage.t EXCEPT SELECT k FROM stage.u"),
    ("intersect_all", "SELECT i FROM stage.t INTERSECT ALL SELECT k FROM stage.u"),
    ("except_all", "SELECT i FROM stage.t EXCEPT ALL SELECT k FROM stage.u"),
    ("except_nulls", "SELECT s FROM stage.t EXCEPT SELECT name FROM stage.u"),
    ("intersect_nulls", "SELECT b FROM stage.t INTERSECT SELECT b FROM stage.t WHERE id > 3"),
    ("except_rows", "SELECT grp, b FROM stage.t EXCEPT SELECT grp, b FROM stage.t WHERE id > 6"),
    ("union_mixed_types", "SELECT i AS x FROM stage.t UNION ALL SELECT f FROM stage.t"),
    ("union_int_dec", "SELECT i AS x FROM stage.t WHERE id < 4 UNION ALL SELECT d FROM stage.t WHERE id < 4"),
    ("union_strings", "SELECT s FROM stage.t UNION SELECT name FROM stage.u"),
    ("case_mixed", "SELECT id, CASE WHEN id > 6 THEN i ELSE f END AS x FROM stage.t"),
    ("union_order_limit", "SELECT x FROM (SELECT i AS x FROM stage.t UNION SELECT k FROM stage.u) AS q ORDER BY x NULLS LAST LIMIT 3"),
    ("except_all_dup", "SELECT grp FROM stage.t EXCEPT ALL SELECT grp FROM stage.t WHERE id > 4"),
]

MISC = [
    ("order_limit", "SELECT id FROM stage.t ORDER BY i DESC NULLS LAST, id LIMIT 3"),
    ("order_offset", "SELECT id FROM stage.t ORDER BY id LIMIT 3 OFFSET 4"),
    ("order_nulls_default", "SELECT id FROM stage.t ORDER BY i, id LIMIT 4"),
    ("order_desc_default", "SELECT id FROM stage.t ORDER BY i DESC, id LIMIT 4"),
    ("order_text", "SELECT s FROM stage.t ORDER BY s LIMIT 5"),
    ("cte", "WITH x AS (SELECT grp, sum(i) AS total FROM stage.t GROUP BY grp) SELECT grp, total FROM x WHERE total > 0"),
    ("cte_two", "WITH a AS (SELECT id, i FROM stage.t), b AS (SELECT id, i * 2 AS i2 FROM a) SELECT a.id, b.i2 FROM a JOIN b USING (id)"),
    ("values", "SELECT x, y FROM (VALUES (1, 'a'), (2, 'b'), (NULL, 'c')) AS v(x, y)"),
    ("nested", "SELECT grp, n FROM (SELECT grp, count(*) AS n FROM (SELECT * FROM stage.t WHERE b) AS x GROUP BY grp) AS y"),
    ("where_or_null", "SELECT id FROM stage.t WHERE i > 5 OR s IS NULL"),
    ("where_not", "SELECT id FROM stage.t WHERE NOT (i > 5)"),
    ("where_like", "SELECT id FROM stage.t WHERE s LIKE '%a%'"),
    ("distinct_on", "SELECT DISTINCT ON (grp) grp, id FROM stage.t ORDER BY grp, id DESC"),
    ("limit_zero", "SELECT id FROM stage.t LIMIT 0"),
    ("const_select", "SELECT 1 + 1, 'a' || 'b', NULL IS NULL"),
    ("in_list_null", "SELECT id FROM stage.t WHERE i IN (10, NULL)"),
    ("not_in_list_null", "SELECT id FROM stage.t WHERE i NOT IN (10, NULL)"),
    ("case_no_else", "SELECT id, CASE WHEN b THEN 'y' END FROM stage.t"),
    ("coalesce_types", "SELECT id, coalesce(d, f) FROM stage.t"),
    ("group_by_alias", "SELECT upper(grp) AS g, count(*) FROM stage.t GROUP BY g"),
    ("order_by_agg", "SELECT grp, count(*) AS n FROM stage.t GROUP BY grp ORDER BY n DESC, grp LIMIT 2"),
    ("string_compare_unicode", "SELECT id FROM stage.t WHERE s > 'Z'"),
    ("upper_unicode", "SELECT upper('straße'), lower('ΣΊΣΥΦΟΣ'), upper('é')"),
    ("length_unicode", "SELECT length('日本語'), octet_length('日本語')"),
    ("similar_to", "SELECT id FROM stage.t WHERE s SIMILAR TO 'a%'"),
    ("at_time_zone", "SELECT id, ts AT TIME ZONE 'UTC' FROM stage.t"),
    ("regexp_match_count", "SELECT id, regexp_count(s, 'a') FROM stage.t"),
    ("int_div_zero_guard", "SELECT id, CASE WHEN j = 0 THEN NULL ELSE i / j END FROM stage.t"),
    ("nullif_div", "SELECT id, i / nullif(j, 0) FROM stage.t"),
    ("float_div_zero_guard", "SELECT id, f / nullif(f, 0) FROM stage.t"),
]

ERRORS = [
    ("overflow_mul", "SELECT id, n * 2 FROM stage.big"),
    ("overflow_mul_max", "SELECT id, n * 9223372036854775807 FROM stage.big"),
    ("overflow_add", "SELECT id, n + n FROM stage.big"),
    ("overflow_sub", "SELECT id, n - 9223372036854775807 - 10 FROM stage.big"),
    ("overflow_sum_product", "SELECT sum(n * 1000000000000) FROM stage.big"),
    ("int_div_zero", "SELECT id, i / j FROM stage.t"),
    ("int_mod_zero", "SELECT id, i % j FROM stage.t"),
    ("float_div_zero", "SELECT id, f / (f - f) FROM stage.big"),
    ("float_div_zero_lit", "SELECT id, 1.0 / 0.0 FROM stage.big"),
    ("ln_zero", "SELECT id, ln(f) FROM stage.big WHERE id = 3"),
    ("float_overflow", "SELECT id, f * 10 FROM stage.big"),
    ("sqrt_negative", "SELECT id, sqrt(f) FROM stage.big WHERE id = 2"),
    ("cast_overflow", "SELECT id, CAST(f AS BIGINT) FROM stage.big"),
    ("bad_cast", "SELECT id, CAST(s AS BIGINT) FROM stage.t"),
    ("bad_date_cast", "SELECT CAST('2024-02-30' AS DATE)"),
]

BIG = [
    ("big_sum_exact", "SELECT sum(n) FROM stage.big WHERE id > 1"),
    ("big_avg", "SELECT avg(n) FROM stage.big WHERE id > 2"),
    ("big_div", "SELECT id, n / 2 FROM stage.big"),
    ("big_cast_dec", "SELECT id, CAST(n AS DECIMAL(38, 0)) * 10 FROM stage.big"),
    ("big_float", "SELECT id, CAST(n AS DOUBLE) FROM stage.big"),
    ("big_compare", "SELECT id FROM stage.big WHERE n > 9223372036854775806"),
    ("big_neg", "SELECT id, -n FROM stage.big"),
    ("big_abs", "SELECT id, abs(n) FROM stage.big"),
]


def queries():
    out = []
    out += scalar("int", INTEGER)
    out += scalar("dec", DECIMAL)
    out += scalar("float", FLOAT)
    out += scalar("str", STRING)
    out += scalar("date", DATE)
    out += scalar("cast", CAST)
    out += scalar("bool", BOOL)
    for prefix, group in [("agg", AGGREGATE), ("win", WINDOW), ("join", JOIN),
                          ("set", SETOPS), ("misc", MISC), ("err", ERRORS), ("big", BIG)]:
        out += [(f"{prefix}_{name}", sql) for name, sql in group]
    names = [n for n, _ in out]
    assert len(names) == len(set(names)), "query names repeat"
    return out
