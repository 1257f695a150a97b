-- Certificate renewal of enrolled boxes (issue 14). `cert_expires_at` stays
-- the bundle certificate's (the bundle is assembled from `cert_pem`); these
-- columns say what the edge itself holds: the expiry of the newest
-- certificate issued to it through enrollment or renewal, when it last
-- renewed, and the last refusal of a renewal (why, when), which the site
-- page shows.
ALTER TABLE agents ADD COLUMN edge_cert_expires_at INTEGER;
ALTER TABLE agents ADD COLUMN renewed_at INTEGER;
ALTER TABLE agents ADD COLUMN renewal_refused_at INTEGER;
ALTER TABLE agents ADD COLUMN renewal_refusal TEXT;
