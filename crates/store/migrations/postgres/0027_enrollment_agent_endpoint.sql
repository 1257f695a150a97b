-- Gateway-initiated mode registered at onboarding (issue 18, seed 004: "the
-- platform knows agent endpoint from onboarding registration"). An
-- enrollment token of scope site or agent may be created for this mode with
-- the endpoint where the platform's gateway reaches the agent (parsed and
-- checked against the operator's address rule by
-- domain::agent_poll::PollTarget) and its poll interval; redeeming the token
-- stores them with the site's agent (agent_polls). A token without them
-- enrolls a dial-out agent. Nothing the agent sends sets an endpoint.
ALTER TABLE enrollment_tokens ADD COLUMN agent_endpoint TEXT;
ALTER TABLE enrollment_tokens ADD COLUMN poll_interval_secs BIGINT;
