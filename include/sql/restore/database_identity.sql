-- What makes a database itself beyond its contents, and what a restore into a new database does not bring along:
-- its owner, privileges (NULL: the defaults), connection limit and comment.
SELECT pg_get_userbyid(d.datdba) AS owner,
       d.datacl::text AS acl,
       d.datconnlimit AS connection_limit,
       shobj_description(d.oid, 'pg_database') AS comment
FROM pg_database d
WHERE d.datname = %(name)s;
