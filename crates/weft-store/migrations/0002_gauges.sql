-- Indexes for the gauge sweep: running steps by queue (ready steps already
-- have weft_steps_ready) and active runs by status.
CREATE INDEX IF NOT EXISTS weft_steps_running ON weft_steps (queue) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS weft_runs_active ON weft_runs (workflow, status) WHERE status IN ('pending', 'running');
