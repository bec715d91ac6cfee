-- When the newest passed drill finished, and the oldest drill of any outcome (none passed: the drills are stale
-- from the first one on); both null when no drill was ever recorded.
SELECT max(finished_at) FILTER (WHERE outcome = 'passed') AS newest_passed_at, min(finished_at) AS first_drill_at
FROM ops.restore_drills
