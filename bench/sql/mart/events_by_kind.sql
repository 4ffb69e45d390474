-- Grouped aggregate with a join: the benchmark's transform model.
SELECT k.label,
       e.created,
       count(*)                 AS events,
       sum(e.amount)            AS amount,
       sum(e.qty * k.weight)    AS weighted_qty
FROM stage.events AS e
JOIN stage.kinds  AS k ON k.kind = e.kind
WHERE e._data_period = $period
GROUP BY k.label, e.created
