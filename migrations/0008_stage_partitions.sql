-- Partitions of the stage tables of datasets with periods (one per period,
-- attached to stage.<dataset>), and the staging tables a load COPYs into before
-- it swaps one in. Readers query stage.<dataset>; nothing here is read directly.
CREATE SCHEMA IF NOT EXISTS stage_part;
