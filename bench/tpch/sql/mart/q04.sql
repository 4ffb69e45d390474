SELECT o_orderpriority, count(*) AS order_count
  FROM stage.orders
 WHERE o_orderdate >= DATE '1993-07-01' AND o_orderdate < DATE '1993-10-01'
   AND EXISTS (SELECT * FROM stage.lineitem WHERE l_orderkey = o_orderkey AND l_commitdate < l_receiptdate)
 GROUP BY o_orderpriority
