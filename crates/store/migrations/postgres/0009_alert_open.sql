-- An alert that is raised and not yet acknowledged is `open` (it was
-- called `pending`, which read as "not raised yet").
UPDATE alerts SET status = 'open' WHERE status = 'pending';
