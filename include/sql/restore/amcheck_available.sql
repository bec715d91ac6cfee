-- Whether the connecting role can install amcheck where a restored copy lacks it: the extension is available and
-- the role is a superuser or the extension is trusted.
SELECT EXISTS (
    SELECT 1
    FROM pg_available_extension_versions v
    WHERE v.name = 'amcheck'
      AND (v.trusted OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user))
);
