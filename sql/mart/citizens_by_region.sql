-- Citizens, active citizens and total balance per region, for one period.
-- Target: mart.citizens_by_region (rows of the period replaced on each run).
SELECT
    r.region_code,
    r.region_name,
    count(*)                                              AS citizens,
    sum(CASE WHEN c.status = 'active' THEN 1 ELSE 0 END)  AS active_citizens,
    sum(c.amount)                                         AS total_amount
FROM stage.citizens AS c
JOIN stage.regions  AS r ON r.region_code = c.region_code
WHERE c._data_period = $period
GROUP BY r.region_code, r.region_name
