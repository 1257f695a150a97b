-- Commands for a listening agent (gateway-initiated mode) wait as
-- `pending` until the gateway's next poll of the agent hands them over;
-- every poll looks for them, so the pending ones are indexed on their own
-- (a site's history of finished commands is never scanned).
CREATE INDEX agent_commands_pending ON agent_commands (tenant_id, agent_id, created_at)
    WHERE status = 'pending';
