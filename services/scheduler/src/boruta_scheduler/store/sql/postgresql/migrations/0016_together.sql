-- Co-located groups of a request's profiles (docs/api.md, "Co-location"), as a JSON list
-- of [profile names (empty: every profile), placement (1: one host, 2: one stack)];
-- NULL: none. Written once, with the request.
ALTER TABLE requests ADD COLUMN together TEXT;
