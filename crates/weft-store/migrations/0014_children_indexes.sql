-- Indexes that keep a `for_each` step's cost linear in its children. Same
-- statements on SQLite and PostgreSQL.
--
-- The pending children of a step, by index: making the next ones ready as a
-- slot frees reads this index from its first entry. Before, it walked the
-- primary key past every child already made ready, so a step of N children
-- cost O(N²) over its life (a 1,000-child step held its run's lock for
-- seconds, and the workers' heartbeats queued behind it).
CREATE INDEX IF NOT EXISTS weft_children_pending ON weft_children (run_id, position, idx) WHERE status = 'pending';
-- The running children, for the running-steps gauge (as `weft_steps_running`
-- is for steps): without it each gauge refresh read every child ever stored.
CREATE INDEX IF NOT EXISTS weft_children_running ON weft_children (queue) WHERE status = 'running';
