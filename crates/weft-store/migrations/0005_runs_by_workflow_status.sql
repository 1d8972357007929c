-- Runs of one workflow in one status, newest first (`runs --workflow W
-- --status S`, the dashboard's filters): without it a rare combination
-- walks every run of the status, or of the workflow. Same statement on
-- SQLite and PostgreSQL.
CREATE INDEX IF NOT EXISTS weft_runs_workflow_status ON weft_runs (workflow, status, run_id);
